"""A bad table in any section of ``jobctl.toml`` fails every command, not only the one
that reads it: exit 2, one line naming the key and the file, nothing recorded."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import Cli

BAD_TABLES = {
    "snapshot": '[snapshots.x]\ntable = "snap_x"\nkey = ["k"]\nperiods = ["year"]\n'
    'query = "SELECT 1 AS k WHERE :period_start < :period_end"\n',
    "source": '[sources.feed]\npath = "f.json"\nkey = ["id"]\ntable = "t"\nformat = "xml"\n',
    "backfill": "[backfill]\nmax_days = 0\n",
}
NEEDLES = {
    "snapshot": "snapshots.x.periods",
    "source": "sources.feed.format: 'xml' is not one of",
    "backfill": "backfill.max_days",
}


@pytest.mark.parametrize("section", sorted(BAD_TABLES))
@pytest.mark.parametrize("args", [("jobs", "list"), ("run", "sleepy")], ids=["list", "run"])
def test_a_bad_table_fails_every_command(
    cli: Cli, psql: psycopg.Connection[Any], section: str, args: tuple[str, ...]
) -> None:
    config = cli.cwd / "jobctl.toml"
    config.write_text(config.read_text() + BAD_TABLES[section])
    result = cli(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert NEEDLES[section] in lines[0] and "jobctl.toml" in lines[0], lines[0]
    row = psql.execute("SELECT count(*) FROM jobctl.runs").fetchone()
    assert row == (0,)
