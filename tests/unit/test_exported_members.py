"""The public API is what ``pgpulse.__all__`` says, sorted and complete."""

from __future__ import annotations

import pgpulse


def test_all_is_sorted_and_every_name_exists():
    names = [n for n in pgpulse.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (n[0].islower(), n))
    for name in pgpulse.__all__:
        assert hasattr(pgpulse, name), name


def test_every_public_member_is_exported():
    public = {
        name
        for name, value in vars(pgpulse).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("pgpulse")
        and not isinstance(value, type(pgpulse))
    }
    assert public <= set(pgpulse.__all__), public - set(pgpulse.__all__)
