"""jobctl.db.errors: the one translation of driver errors (no server needed)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from jobctl.db.errors import first_line, is_transient, translate, translate_source
from jobctl.errors import DatabaseError, DatabaseUnreachable, SourceError


def test_first_line_keeps_only_the_servers_message() -> None:
    exc = psycopg.errors.SyntaxError('syntax error at or near "SELEC"\nLINE 1: SELEC 1\n        ^')
    assert first_line(exc) == 'syntax error at or near "SELEC"'


def test_first_line_redacts_a_quoted_password() -> None:
    exc = psycopg.OperationalError("invalid dsn: postgresql://u:hunter2@h/db\nmore")
    assert first_line(exc) == "invalid dsn: postgresql://u:***@h/db"


def test_first_line_of_an_empty_message_is_the_type() -> None:
    assert first_line(psycopg.OperationalError("")) == "OperationalError"


def test_sqlalchemy_wrapper_is_unwrapped() -> None:
    orig = psycopg.errors.UndefinedTable('relation "nope" does not exist\nLINE 1: …')
    wrapped = DBAPIError.instance("SELECT * FROM nope", None, orig, psycopg.Error)
    assert str(wrapped).startswith("(psycopg.errors.UndefinedTable)")
    assert first_line(wrapped) == 'relation "nope" does not exist'
    err = translate(wrapped, "database error")
    assert type(err) is DatabaseError
    assert str(err) == 'database error: relation "nope" does not exist'


def test_translate_connecting_is_unreachable() -> None:
    exc = psycopg.OperationalError("connection refused\n\tIs the server running?")
    err = translate(exc, "cannot connect to the database postgresql://h/db", connecting=True)
    assert isinstance(err, DatabaseUnreachable)
    assert str(err) == "cannot connect to the database postgresql://h/db: connection refused"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), True),
        (psycopg.errors.UndefinedColumn('column "form" does not exist'), False),
        (psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT"), False),
    ],
)
def test_translate_source_is_transient_only_for_operational_errors(
    exc: psycopg.Error, transient: bool
) -> None:
    err = translate_source(exc, "the query failed")
    assert isinstance(err, SourceError) and err.transient is transient
    assert str(err) == f"the query failed: {exc!s}"
    assert is_transient(exc) is transient
    wrapped = OperationalError("SELECT 1", None, exc)
    assert is_transient(wrapped) is transient  # the driver's error decides, not the wrapper
