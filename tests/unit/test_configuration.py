"""Every gateway setting is settable per key and documented in one table.

``python -m tests.unit.test_configuration`` rewrites the table of
docs/configuration.md from :class:`pgpulse.config.Settings`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pgpulse.config import describe, load_settings
from pgpulse.exceptions import ConfigurationError

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"
BEGIN = "<!-- settings table: generated from pgpulse.config.Settings -->"
END = "<!-- end of settings table -->"


def table() -> str:
    lines = [
        "| key | environment | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, env, kind, default, doc in describe():
        lines.append(
            f"| `{key}` | `{env}` | {kind.replace('|', 'or')} | `{default}` | {doc} |"
        )
    return "\n".join(lines)


def test_the_documented_table_is_the_settings_class():
    text = DOC.read_text()
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == table(), (
        "docs/configuration.md is out of date: python -m tests.unit.test_configuration"
    )


def test_precedence_is_cli_then_environment_then_file_then_default(tmp_path):
    config = tmp_path / "pgpulse.toml"
    config.write_text(
        '[serve]\ndatabase_url = "postgresql://file/db"\nport = 7000\n'
        'heartbeat = 3.5\ncors_origins = ["https://a.example"]\n'
    )
    env = {"PGPULSE_PORT": "7001", "PGPULSE_REST_ENABLED": "yes"}
    settings = load_settings({"heartbeat": 1.0}, env, str(config))
    assert settings.database_url == "postgresql://file/db"
    assert settings.port == 7001  # environment over file
    assert settings.heartbeat == 1.0  # command line over both
    assert settings.rest_enabled is True
    assert settings.cors_origins == ["https://a.example"]
    assert settings.keepalive == 5.0  # default
    from_env = load_settings(
        {}, {"DATABASE_URL": "postgresql://env/db", "PGPULSE_REST": "1"}, None
    )
    assert from_env.database_url == "postgresql://env/db" and from_env.rest_enabled
    listed = load_settings(
        {}, {"DATABASE_URL": "x", "PGPULSE_CORS_ORIGINS": "https://a, https://b"}, None
    )
    assert listed.cors_origins == ["https://a", "https://b"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGPULSE_PORT": "eighty"}, "environment PGPULSE_PORT: port must be a whole"),
        ({"PGPULSE_HEARTBEAT": "nan"}, "heartbeat must be a finite number"),
        ({"PGPULSE_REST_ENABLED": "maybe"}, "rest_enabled must be true or false"),
        ({"PGPULSE_RETENTION_ROWS": "x"}, "(or empty for none)"),
        ({}, "no database"),
    ],
)
def test_a_bad_value_names_the_key_and_what_it_expects(env, message):
    env = {"DATABASE_URL": "postgresql://x/y", **env} if env else {}
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_settings({}, env, None)


def test_unknown_keys_in_the_file_are_refused(tmp_path):
    config = tmp_path / "pgpulse.toml"
    config.write_text('[serve]\ndatabase_url = "x"\nprot = 1\n')
    with pytest.raises(ConfigurationError, match=r"unknown setting.*prot"):
        load_settings({}, {}, str(config))


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n\n{table()}\n\n{END}{tail}")
    sys.exit(0)
