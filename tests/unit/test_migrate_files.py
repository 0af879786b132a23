"""Migration files: names, discovery errors, directives, checksums, new files."""

from __future__ import annotations

import hashlib
import re

import pytest

from pgpulse.exceptions import PgPulseError
from pgpulse.migrate import MigrationError, discover, new_migration, validate_name


@pytest.mark.parametrize(
    "name", ["add_documents", "v2", "a", "add_index_3", "watch_docs_", "x__y"]
)
def test_lowercase_words_with_underscores_are_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Add", "add-documents", "2fast", "_x", "a b", "ü", "a.sql"]
)
def test_other_names_are_rejected_with_an_example(name):
    with pytest.raises(MigrationError, match=r"invalid migration name.*add_documents"):
        validate_name(name)


def test_migration_error_is_a_pgpulse_error():
    assert issubclass(MigrationError, PgPulseError)


def test_new_migration_writes_a_utc_timestamped_file_with_the_sql(tmp_path):
    path = new_migration(tmp_path / "migrations", "add_documents", "create table d ();")
    assert re.fullmatch(r"20\d{12}_add_documents\.sql", path.name)
    assert path.read_text() == "create table d ();\n"
    (found,) = discover(tmp_path / "migrations")
    assert found.path == path
    assert found.name == "add_documents"
    assert found.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_migrations_in_the_same_second_get_distinct_increasing_versions(tmp_path):
    paths = [new_migration(tmp_path, f"step_{i}") for i in range(3)]
    versions = [m.version for m in discover(tmp_path)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    assert [m.path for m in discover(tmp_path)] == paths


def test_new_migration_with_a_bad_name_writes_nothing(tmp_path):
    with pytest.raises(MigrationError, match="invalid migration name"):
        new_migration(tmp_path, "Bad-Name")
    assert list(tmp_path.iterdir()) == []


def test_discover_orders_by_version_and_ignores_non_sql_files(tmp_path):
    (tmp_path / "20260102000000_second.sql").write_text("select 2;")
    (tmp_path / "20260101000000_first.sql").write_text("select 1;")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "20260103000000_third.sql~").write_text("backup")
    assert [m.name for m in discover(tmp_path)] == ["first", "second"]


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(MigrationError, match=r"does not exist.*--dir"):
        discover(tmp_path / "nope")


def test_badly_named_sql_files_are_errors_not_skipped(tmp_path):
    (tmp_path / "add_documents.sql").write_text("select 1;")
    (tmp_path / "20260101000000_Add-Docs.sql").write_text("select 1;")
    with pytest.raises(MigrationError) as caught:
        discover(tmp_path)
    message = str(caught.value)
    assert "add_documents.sql" in message
    assert "20260101000000_Add-Docs.sql" in message
    assert "VERSION_NAME.sql" in message


def test_duplicate_versions_name_both_files(tmp_path):
    (tmp_path / "20260101000000_one.sql").write_text("select 1;")
    (tmp_path / "20260101000000_two.sql").write_text("select 2;")
    with pytest.raises(MigrationError, match="duplicate migration version") as caught:
        discover(tmp_path)
    assert "20260101000000_one.sql" in str(caught.value)
    assert "20260101000000_two.sql" in str(caught.value)


def test_no_transaction_directive_is_read_from_the_leading_comments(tmp_path):
    (tmp_path / "1_a.sql").write_text(
        "-- build the index without locking writes\n"
        "--  PgPulse:  No-Transaction\n"
        "create index concurrently i on t (x);"
    )
    (tmp_path / "2_b.sql").write_text(
        "select 1;\n-- pgpulse: no-transaction\n"  # not in the header: ignored
    )
    a, b = discover(tmp_path)
    assert a.no_transaction
    assert not b.no_transaction


def test_directive_spelled_with_a_space_or_underscore_still_counts(tmp_path):
    (tmp_path / "1_a.sql").write_text("-- pgpulse: no transaction\nselect 1;")
    (tmp_path / "2_b.sql").write_text("-- pgpulse: NO_TRANSACTION\nselect 1;")
    assert all(m.no_transaction for m in discover(tmp_path))


def test_a_pgpulse_comment_in_prose_is_not_a_directive(tmp_path):
    (tmp_path / "1_a.sql").write_text(
        "-- pgpulse: capture changes for real-time delivery.\nselect 1;"
    )
    (only,) = discover(tmp_path)
    assert not only.no_transaction


def test_unknown_directive_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "1_a.sql").write_text("-- pgpulse: no-transation\nselect 1;")
    with pytest.raises(MigrationError, match=r"1_a\.sql.*unknown directive"):
        discover(tmp_path)


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    (tmp_path / "1_a.sql").write_bytes(b"select '\xff';")
    with pytest.raises(MigrationError, match=r"1_a\.sql: not valid UTF-8"):
        discover(tmp_path)
