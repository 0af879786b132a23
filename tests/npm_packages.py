"""Front-end packages from the npm registry, for browser tests without a bundler.

Why not ``npm install``: the pages only need a few files of a package as
published (React's UMD builds, Svelte's store module), and the browser can
take them as they are; a tarball from the registry, unpacked into a cache,
needs no Node.js.  Chromium never reaches the network: the tests answer its
requests for ``https://unpkg.com/NAME@VERSION/PATH`` (the address the docs'
examples use) from these files.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path

__all__ = ["package_file", "unpkg_file"]

REGISTRY = os.environ.get("PGPULSE_NPM_REGISTRY", "https://registry.npmjs.org")
CACHE = Path(
    os.environ.get(
        "PGPULSE_NPM_CACHE", Path.home() / ".cache" / "pgpulse-tests" / "npm"
    )
)

_UNPKG = re.compile(r"^https://unpkg\.com/((?:@[^/]+/)?[^@/]+)@([^/]+)/(.+)$")


def _unpacked(name: str, version: str) -> Path:
    target = CACHE / f"{name.replace('/', '__')}-{version}"
    if (target / "package.json").exists():
        return target
    base = name.split("/")[-1]
    url = f"{REGISTRY}/{name}/-/{base}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    partial = target.with_suffix(".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            # npm tarballs hold one top folder ("package/"); keep what is under it.
            parts = Path(member.name).parts[1:]
            if not member.isfile() or not parts or ".." in parts:
                continue
            out = partial.joinpath(*parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            extracted = tar.extractfile(member)
            assert extracted is not None
            out.write_bytes(extracted.read())
    if (target / "package.json").exists():
        shutil.rmtree(partial)  # another run unpacked it meanwhile
    else:
        partial.rename(target)
    return target


def package_file(name: str, version: str, path: str) -> bytes:
    """A file of *name*@*version* as published."""
    root = _unpacked(name, version)
    file = (root / path).resolve()
    if root.resolve() not in file.parents:
        raise FileNotFoundError(path)
    return file.read_bytes()


def unpkg_file(url: str) -> bytes | None:
    """The file an ``https://unpkg.com/NAME@VERSION/PATH`` address names, or
    None for another address."""
    match = _UNPKG.match(url.split("?", 1)[0])
    if match is None:
        return None
    return package_file(*match.groups())
