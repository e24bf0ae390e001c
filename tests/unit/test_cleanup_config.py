"""``[cleanup.NAME]``, ``[retention]`` and a snapshot set's ``retention``: checked at load."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobctl.config import Settings, load_settings
from jobctl.config_models import CleanupPolicy
from jobctl.errors import ConfigError, UsageError
from jobctl.jobs.cleanup import CleanupArgs, plan, policies
from jobctl.jobspec import Planning

POLICY = '[cleanup.logs]\ntable = "public.logs"\ncolumn = "at"\nkeep = "30d"\n'
SNAPSHOT = (
    '[snapshots.daily]\ntable = "snap"\nkey = ["k"]\nperiods = ["day", "week"]\n'
    "query = 'SELECT 1 AS k WHERE :period_start < :period_end'\n"
)


def load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "jobctl.toml").write_text(text)
    return load_settings(config_path=tmp_path / "jobctl.toml", environ={})


def test_a_policy_and_its_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, POLICY + "where = \"level LIKE 'in%'\"\n")
    assert s.cleanup == {
        "logs": CleanupPolicy(
            name="logs",
            table="public.logs",
            column="at",
            keep=timedelta(days=30),
            where="level LIKE 'in%'",
            batch_size=10_000,
        )
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (POLICY.replace('"public.logs"', '"x; DROP TABLE y"'), "cleanup.logs.table: 'x; DROP"),
        (POLICY.replace('"at"', '"a b"'), "cleanup.logs.column: 'a b' is not a column name"),
        (POLICY.replace('"30d"', '"0s"'), "cleanup.logs.keep: duration '0s' must be more"),
        (POLICY.replace('"30d"', '"soon"'), "cleanup.logs.keep: "),
        (POLICY + "batch_size = 0\n", "cleanup.logs.batch_size: 0 is not a whole number >= 1"),
        (POLICY + "where = ''\n", "cleanup.logs.where: '' is not a non-empty string"),
        (POLICY + "colour = 1\n", "cleanup.logs.colour: unknown key (known: batch_size, column,"),
        (POLICY.replace('column = "at"\n', ""), "cleanup.logs.column: is required"),
        (POLICY.replace("logs", "runs", 1), "cleanup.runs: 'runs' is a built-in policy"),
        (POLICY.replace("logs", '"a.b"', 1), "cleanup.a.b: cleanup policy names may hold"),
        (POLICY + "where = 'true; DROP TABLE y'\n", "cleanup.logs.where: holds ';'"),
        (POLICY + "where = 'a = 1) OR (true'\n", "cleanup.logs.where: closes a parenthesis"),
        (POLICY + "where = '(a = 1'\n", "cleanup.logs.where: leaves a parenthesis open"),
        ("cleanup = 3\n", "cleanup: must be a table of [cleanup.NAME] tables"),
        (SNAPSHOT + 'retention = { day = "0d" }\n', "snapshots.daily.retention.day: duration"),
        (SNAPSHOT + "retention = { year = '1d' }\n", "snapshots.daily.retention.year: unknown"),
        ("[retention]\npolicies = []\n", "retention.policies: unknown key (known: runs,"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "where",
    ["level = ';'", "(a = 1) AND b", 'x."a;b" IS NULL', "a = 1 -- why; (see ticket", "a = $$)$$"],
)
def test_a_where_with_separators_only_in_literals_loads(tmp_path: Path, where: str) -> None:
    assert load(tmp_path, POLICY + f"where = '''{where}'''\n").cleanup["logs"].where == where


def test_the_built_in_policies_and_a_set_of_its_own(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        POLICY
        + SNAPSHOT
        + 'retention = { day = "7d" }\n[retention]\nruns = "20d"\n'
        + 'snapshots = { week = "70d" }\n',
    )
    found = policies(s)
    assert list(found) == ["logs", "runs", "schedules", "snapshots.daily"]
    assert found["runs"].parts[0].keep == timedelta(days=20) and found["runs"].runs
    schedules = found["schedules"]
    assert not schedules.optional and schedules.parts[0].keep == timedelta(days=30)
    assert schedules.parts[0].table == "jobctl.scheduled"
    assert schedules.parts[0].column == "finished_at"
    keeps = {p.label: p.keep for p in found["snapshots.daily"].parts}
    assert keeps == {"day": timedelta(days=7), "week": timedelta(days=70)}  # no month period


def test_policy_selection(tmp_path: Path) -> None:
    s = load(tmp_path, POLICY)
    chosen = plan(s, CleanupArgs(policies=["runs", "logs", "runs"]), Planning())
    assert [p.name for p in chosen.policies] == ["runs", "logs"]
    assert chosen.params == {"policies": "runs,logs"}
    assert [p.name for p in plan(s, CleanupArgs(), Planning()).policies] == [
        "logs",
        "runs",
        "schedules",
    ]
    with pytest.raises(UsageError, match=r"unknown cleanup policy 'x' \(configured: logs, runs"):
        plan(s, CleanupArgs(policies=["x"]), Planning())
