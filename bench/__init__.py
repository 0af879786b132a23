"""pgpulse benchmarks, measured side by side with peers: ``python -m bench``.

See docs/benchmarks.md for the results and :mod:`bench.run` for the plans.
"""
