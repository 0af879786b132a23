"""Connection budgets: the file, the arithmetic, and live usage on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result

from pgpulse.budget import OTHER, Budget, check_budget, load_budget, parse_budget
from pgpulse.cli.budget import budget as budget_command
from pgpulse.exceptions import ConfigurationError

EXAMPLE = """
[budget]
headroom = 5

[budget.services]
api = 20
worker = 10
pgpulse = 3        # the gateway
migrations = 1
"""


def test_budget_is_read_from_pgpulse_toml_in_the_current_directory(
    tmp_path, monkeypatch
):
    (tmp_path / "pgpulse.toml").write_text(EXAMPLE)
    monkeypatch.chdir(tmp_path)
    budget = load_budget()
    assert budget is not None
    assert dict(budget.services) == {
        "api": 20,
        "worker": 10,
        "pgpulse": 3,
        "migrations": 1,
    }
    assert budget.headroom == 5
    assert budget.declared_total == 39
    assert budget.share_for("pgpulse") == 3
    assert budget.share_for("nobody") is None
    assert budget.source == tmp_path / "pgpulse.toml"


def test_budget_is_read_from_tool_pgpulse_in_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.pgpulse.budget]\nheadroom = 2\n'
        "[tool.pgpulse.budget.services]\napi = 7\n"
    )
    monkeypatch.chdir(tmp_path)
    budget = load_budget()
    assert budget == Budget({"api": 7}, 2)
    assert load_budget(tmp_path / "pyproject.toml") == budget


def test_no_config_file_or_no_budget_table_means_no_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_budget() is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
    assert load_budget() is None
    (tmp_path / "pgpulse.toml").write_text("[serve]\nport = 8000\n")
    assert load_budget() is None


def test_an_explicit_config_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_budget(tmp_path / "nope.toml")


def test_malformed_toml_names_the_file_and_the_position(tmp_path):
    path = tmp_path / "pgpulse.toml"
    path.write_text("[budget]\nheadroom = = 5\n")
    with pytest.raises(ConfigurationError) as caught:
        load_budget(path)
    assert str(path) in str(caught.value)
    assert "not valid TOML" in str(caught.value)
    assert "line 2" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"headrom": 5}, r"unknown key 'headrom'.*did you mean 'headroom'"),
        ({"headroom": -1}, r"budget\.headroom must be a whole number >= 0, got -1"),
        ({"services": {"api": -3}}, r"budget\.services\.api .* got -3"),
        ({"services": {"api": 2.5}}, r"budget\.services\.api .* got 2\.5"),
        ({"services": {"api": True}}, r"budget\.services\.api .* got True"),
        ({"services": {"api": "20"}}, r"budget\.services\.api .* got '20'"),
        ({"services": [1, 2]}, r"budget\.services must be a table"),
        ("lots", r"\[budget\] must be a table"),
    ],
)
def test_bad_budget_values_are_rejected_with_the_key_and_value(section, expected):
    with pytest.raises(ConfigurationError, match=expected):
        parse_budget(section, "pgpulse.toml")


def test_building_a_budget_in_python_validates_numbers():
    with pytest.raises(ValueError, match="service 'api'"):
        Budget({"api": -1})
    with pytest.raises(ValueError, match="headroom"):
        Budget({}, headroom=-2)


@pytest.mark.parametrize(
    ("application_name", "service"),
    [
        ("api", "api"),
        ("api-7", "api"),
        ("api:web", "api"),
        ("apiary", None),
        ("pgpulse", "pgpulse"),
        ("pgpulse-listener", "pgpulse"),
        ("pgpulse-admin", "pgpulse-admin"),
        ("pgpulse-admin-2", "pgpulse-admin"),
        ("migrations:pgpulse", "migrations"),
        ("", None),
    ],
)
def test_application_names_match_exactly_or_by_dash_or_colon_prefix(
    application_name, service
):
    budget = Budget({"api": 1, "pgpulse": 1, "pgpulse-admin": 1, "migrations": 1})
    assert budget.service_for(application_name) == service


@pytest.fixture
async def workers(database: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Three connections that say they are the worker service, one stranger."""
    names = ["worker", "worker-2", "worker:cron", "stranger"]
    conns = [
        await asyncpg.connect(database, server_settings={"application_name": n})
        for n in names
    ]
    try:
        yield conns
    finally:
        for c in conns:
            await c.close()


async def test_live_usage_counts_the_connections_each_service_holds(database, workers):
    budget = Budget({"worker": 10, "api": 5}, headroom=5)
    report = await check_budget(database, budget)
    rows = {row.service: row for row in report.services}
    assert rows["worker"].in_use == 3
    assert rows["worker"].application_names == ("worker", "worker-2", "worker:cron")
    assert rows["api"].in_use == 0
    assert "stranger" in rows[OTHER].application_names
    assert report.fits
    assert report.ok
    assert report.max_connections == 400
    assert report.available == 400 - report.superuser_reserved - report.reserved
    assert report.message.startswith("within budget: declared 20 (worker 10 + api 5")


async def test_a_connection_passed_in_counts_under_its_own_name(conn):
    budget = Budget({"pytest": 1})
    await conn.execute("set application_name = 'pytest'")
    report = await check_budget(conn, budget)
    assert report.services[0].in_use == 1


async def test_declared_total_over_max_connections_fails_naming_services(database):
    budget = Budget({"api": 300, "worker": 100}, headroom=5)
    report = await check_budget(database, budget)
    assert not report.fits
    assert not report.ok
    assert report.declared_total == 405
    available = report.available
    assert report.message.startswith(
        "over budget: the declared connections need 405 (api 300 + worker 100 + "
        f"headroom 5) but the server allows {available} (max_connections 400 - "
        f"superuser_reserved_connections {report.superuser_reserved}"
    )
    assert f"by {405 - available}" in report.message
    with pytest.raises(ConfigurationError, match="over budget"):
        report.raise_for_fit()


async def test_a_service_over_its_share_right_now_is_reported(database, workers):
    report = await check_budget(database, Budget({"worker": 2}, headroom=0))
    assert report.fits
    assert not report.ok
    assert [row.service for row in report.over_services] == ["worker"]
    assert "worker holds 3 connections, over its declared 2" in report.message
    assert "undeclared applications" in report.message


async def test_unreachable_server_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="could not connect"):
        await check_budget("postgresql://127.0.0.1:1/x", Budget({}))


async def invoke(*args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, budget_command, list(args), catch_exceptions=False
    )


def config(tmp_path: Path, body: str) -> str:
    path = tmp_path / "pgpulse.toml"
    path.write_text(body)
    return str(path)


async def test_budget_command_shows_the_table_and_exits_zero_when_it_fits(
    database, tmp_path, workers
):
    result = await invoke(
        "--database-url", database, "--config", config(tmp_path, EXAMPLE)
    )
    assert result.exit_code == 0, result.output
    for text in ("worker", "api", OTHER, "headroom", "within budget"):
        assert text in result.output


async def test_budget_command_exits_nonzero_naming_services_when_over(
    database, tmp_path
):
    body = "[budget]\nheadroom = 5\n[budget.services]\napi = 300\nworker = 100\n"
    result = await invoke(
        "--database-url", database, "--config", config(tmp_path, body)
    )
    assert result.exit_code == 1
    assert "api 300 + worker 100 + headroom 5" in result.output
    assert "over budget" in result.output


async def test_budget_command_without_a_budget_explains_what_to_add(database, tmp_path):
    path = config(tmp_path, "[serve]\nport = 1\n")
    result = await invoke("--database-url", database, "--config", path)
    assert result.exit_code == 1
    assert "no connection budget" in result.output
    assert "[budget]" in result.output


async def test_budget_command_reports_malformed_config_without_traceback(
    database, tmp_path
):
    path = config(tmp_path, "[budget]\nservices = { api = -1 }\n")
    result = await invoke("--database-url", database, "--config", path)
    assert result.exit_code == 1
    assert "budget.services.api must be a whole number >= 0, got -1" in result.output
    assert "Traceback" not in result.output


async def test_budget_command_needs_a_database_url(tmp_path):
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        budget_command,
        ["--config", config(tmp_path, EXAMPLE)],
        env={"DATABASE_URL": ""},
    )
    assert result.exit_code == 2
    assert "pass --database-url or set DATABASE_URL" in result.output
