"""The SQLAlchemy ``Table`` definitions agree with the database built from sql/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB
from sqlalchemy.types import TypeEngine

from jobctl.db import tables
from jobctl.db.engine import Database


@pytest.fixture
def reflected(db_url: str) -> Iterator[MetaData]:
    db = Database(db_url)
    meta = MetaData(schema=tables.SCHEMA)
    try:
        with db.connect() as conn:
            meta.reflect(conn, schema=tables.SCHEMA)
        yield meta
    finally:
        db.dispose()


def family(t: TypeEngine[Any]) -> str:
    """A coarse type family: what has to agree between the code and the SQL."""
    if isinstance(t, ARRAY):
        return f"array[{family(t.item_type)}]"
    if isinstance(t, JSONB):
        return "jsonb"
    if isinstance(t, JSON):
        return "json"
    if isinstance(t, DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, Boolean):
        return "boolean"
    # Order matters: BigInteger and SmallInteger are Integers.
    if isinstance(t, BigInteger):
        return "bigint"
    if isinstance(t, SmallInteger):
        return "smallint"
    if isinstance(t, Integer):
        return "integer"
    if isinstance(t, Numeric):
        return "numeric"
    if isinstance(t, String):
        return "text"
    raise AssertionError(f"no type family for {t!r}")


def _shape(table: Table) -> dict[str, tuple[str, bool]]:
    return {c.name: (family(c.type), bool(c.nullable)) for c in table.columns}


def test_every_table_in_the_schema_is_defined(reflected: MetaData) -> None:
    in_db = {t.name for t in reflected.sorted_tables}
    in_code = {t.name for t in tables.metadata.sorted_tables}
    assert in_db == in_code
    assert {"runs", "schema_migrations"} <= in_code


@pytest.mark.parametrize(
    "name",
    ["runs", "schema_migrations", "alert_state", "feed_state", "report_deliveries", "scheduled"],
)
def test_table_definition_matches_the_database(reflected: MetaData, name: str) -> None:
    key = f"{tables.SCHEMA}.{name}"
    db_table = reflected.tables[key]
    code_table = tables.metadata.tables[key]
    db_shape, code_shape = _shape(db_table), _shape(code_table)
    assert list(code_shape) == list(db_shape), "same columns, same order"
    mismatched = {
        col: {"sql": db_shape[col], "code": code_shape[col]}
        for col in db_shape
        if db_shape[col] != code_shape[col]
    }
    assert not mismatched, mismatched
    assert [c.name for c in db_table.primary_key] == [c.name for c in code_table.primary_key]


def test_families_are_not_vacuous(reflected: MetaData) -> None:
    """Sanity check of the comparison itself: the families tell these types apart."""
    runs = reflected.tables[f"{tables.SCHEMA}.runs"]
    assert family(runs.c.id.type) == "bigint"
    assert family(runs.c.pid.type) == "integer"
    assert family(runs.c.params.type) == "jsonb"
    assert family(runs.c.started_at.type) == "timestamptz"
    assert family(runs.c.log_tail.type) == "array[text]"
    assert runs.c.job.nullable is False
    assert runs.c.partition.nullable is True
    assert family(runs.c.dry_run.type) == "boolean" and runs.c.dry_run.nullable is False


def test_ledger_columns_are_real_columns_without_internals() -> None:
    names = {c.name for c in tables.runs.columns}
    assert set(tables.LEDGER_COLUMNS) <= names
    assert not {"lock_backend_pid", "lock_key", "log_tail"} & set(tables.LEDGER_COLUMNS)
    spec = {
        "id",
        "job",
        "params",
        "partition",
        "trigger",
        "parent_id",
        "status",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "duration_ms",
        "attempts",
        "records_total",
        "records_new",
        "records_updated",
        "records_unchanged",
        "records_errors",
        "records_removed",
        "records_deleted",
        "stats",
        "error_message",
        "error_detail",
        "source",
        "host",
        "pid",
        "jobctl_version",
        "scheduled_for",
        "dry_run",  # SPEC: a dry run is `completed`, flagged dry (shown by runs list / show)
    }
    assert spec <= set(tables.LEDGER_COLUMNS), spec - set(tables.LEDGER_COLUMNS)


def test_reflection_sees_the_check_constraints(db_url: str) -> None:
    """The statuses and triggers the ledger writes are the ones the database accepts."""
    from jobctl.jobspec import RunStatus, Trigger

    db = Database(db_url)
    try:
        with db.connect() as conn:
            checks = inspect(conn).get_check_constraints("runs", schema=tables.SCHEMA)
    finally:
        db.dispose()
    status_check = next(c for c in checks if c["name"] == "runs_status_check")
    for status in RunStatus:
        assert f"'{status}'" in status_check["sqltext"]
    trigger_check = next(c for c in checks if c["name"] == "runs_trigger_check")
    for trigger in Trigger:
        assert f"'{trigger}'" in trigger_check["sqltext"]
