"""The peers pgpulse is measured against (each run as its own process)."""
