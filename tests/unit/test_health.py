"""The health rules on their own: no database, no terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobctl.config_models import JobConfig
from jobctl.db.job_state import JobState, RunRef
from jobctl.health import Health, Plugin, assess, grace_for, judge

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BEAT = timedelta(seconds=15)


def cfg(**kw: object) -> JobConfig:
    return JobConfig(name="j", **kw)  # type: ignore[arg-type]


def ok_run(ago: timedelta, run_id: int = 7) -> RunRef:
    return RunRef(run_id, "completed", NOW - ago - timedelta(seconds=5), NOW - ago, 5000)


def test_grace_is_lateness_plus_the_longest_run() -> None:
    assert grace_for(cfg()) == timedelta(minutes=65)
    job = cfg(timeout=timedelta(minutes=10), retries=2, misfire_grace=timedelta(minutes=2))
    assert grace_for(job) == timedelta(minutes=2 + 30, seconds=60)  # 3 x 10m + 2 x 30s


@pytest.mark.parametrize(
    ("success_ago", "state"),
    [
        # the 06:00 slot is due at 07:05 (grace 65 min): at 12:00 a success since 06:00 is ok
        (timedelta(hours=5, minutes=59), Health.OK),
        (timedelta(hours=6, minutes=1), Health.OVERDUE),
    ],
)
def test_overdue_is_measured_from_the_due_slot(success_ago: timedelta, state: Health) -> None:
    s = assess(
        cfg(schedule="0 6 * * *"),
        JobState("j", ok_run(success_ago), ok_run(success_ago)),
        NOW,
        heartbeat=BEAT,
        flavour="systemd",
    )
    assert s.state == state
    assert s.due_slot == datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


def test_a_slot_within_its_grace_is_not_yet_due() -> None:
    at = datetime(2026, 3, 10, 6, 30, tzinfo=UTC)  # 06:00 run may still be going
    last = RunRef(1, "completed", at - timedelta(days=1), at - timedelta(days=1))
    s = assess(
        cfg(schedule="0 6 * * *"), JobState("j", last, last), at, heartbeat=BEAT, flavour="systemd"
    )
    assert s.state == Health.OK and s.due_slot == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)


def test_stuck_after_four_heartbeats_at_least_a_minute() -> None:
    def running(beat_ago: timedelta) -> Health:
        run = RunRef(9, "running", NOW - timedelta(hours=1), heartbeat_at=NOW - beat_ago)
        return assess(
            cfg(), JobState("j", running=run), NOW, heartbeat=BEAT, flavour="systemd"
        ).state

    assert running(timedelta(seconds=59)) == Health.RUNNING
    assert running(timedelta(seconds=61)) == Health.STUCK


@pytest.mark.parametrize(
    ("age", "code"),
    [
        (timedelta(hours=26), Plugin.OK),
        (timedelta(hours=26, seconds=1), Plugin.WARNING),
        (timedelta(hours=52), Plugin.WARNING),
        (timedelta(hours=52, seconds=1), Plugin.CRITICAL),
    ],
)
def test_check_thresholds(age: timedelta, code: Plugin) -> None:
    s = assess(
        cfg(), JobState("j", ok_run(age), ok_run(age)), NOW, heartbeat=BEAT, flavour="systemd"
    )
    result = judge(s, NOW, timedelta(hours=26))
    assert result.code == code
    assert result.line.endswith(f"| age={int(age.total_seconds())}s;93600;187200;0 failures=0;;;0")
