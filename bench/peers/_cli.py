"""Command line shared by the Python peers: ``--database-url`` and ``--port``."""

from __future__ import annotations

import argparse

from bench._proc import raise_nofile


def parse(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    raise_nofile()
    return args
