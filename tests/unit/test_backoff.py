"""The one reconnect rule: exponential, capped, jittered downwards, reset."""

from __future__ import annotations

from pgpulse.backoff import Backoff


def test_delays_grow_then_stay_under_the_cap_and_reset_starts_over():
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2.0, jitter=0.5)
    delays = [backoff.next() for _ in range(8)]
    for i, delay in enumerate(delays):
        base = min(1.0, 0.1 * 2**i)
        assert base * 0.5 <= delay <= base
    assert max(delays) <= 1.0
    backoff.reset()
    assert backoff.next() <= 0.1


def test_without_jitter_the_delays_are_exact():
    backoff = Backoff(initial=0.2, maximum=5.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
