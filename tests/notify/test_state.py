"""The alert decision (pure) and the guarded state changes, against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jobctl.config_models import AlertsConfig
from jobctl.db import alert_state
from jobctl.db.alert_state import Streak
from jobctl.db.engine import Database
from jobctl.notify.alerts import decide

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
CONFIG = AlertsConfig(escalate_after=3, repeat_after=timedelta(hours=24))


def streak(failures: int, kind: str | None = None, ago: timedelta | None = None) -> Streak:
    at = NOW - ago if ago is not None else None
    return Streak("j", failures, NOW, kind, at, NOW)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (streak(1), "failure"),
        (streak(2, "failure", timedelta(minutes=5)), None),
        (streak(2, "failure", timedelta(hours=25)), "reminder"),
        (streak(3, "failure", timedelta(minutes=5)), "escalation"),
        (streak(3), "escalation"),  # a streak whose first alert was never claimed
        (streak(9, "escalation", timedelta(hours=23)), None),
        (streak(9, "escalation", timedelta(hours=24)), "escalation_reminder"),
        (streak(9, "escalation_reminder", timedelta(hours=1)), None),
    ],
)
def test_what_each_state_of_a_streak_sends(state: Streak, expected: str | None) -> None:
    assert decide(state, CONFIG) == expected


def test_ten_failures_within_repeat_after_send_one_alert_and_one_escalation() -> None:
    sent, kind, at = [], None, None
    for n in range(1, 11):
        choice = decide(Streak("j", n, NOW, kind, at, NOW + timedelta(minutes=n)), CONFIG)
        if choice is not None:
            sent.append(choice)
            kind, at = choice, NOW + timedelta(minutes=n)
    assert sent == ["failure", "escalation"]


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def test_two_processes_never_both_claim_one_alert(db: Database) -> None:
    with db.begin() as conn:
        seen = alert_state.count_failure(conn, "j", 1)
        assert seen is not None and seen.failures == 1
        assert alert_state.count_failure(conn, "j", 1) is None  # the same run: counted once
    # both hosts decided from the same state: one claim wins
    with db.begin() as conn:
        assert alert_state.claim(conn, seen, "failure", 1) is True
    with db.begin() as conn:
        assert alert_state.claim(conn, seen, "failure", 1) is False
    with db.begin() as conn:
        ended = alert_state.end_streak(conn, "j")
        assert ended is not None and (ended.failures, ended.last_alert_kind) == (1, "failure")
        assert alert_state.end_streak(conn, "j") is None  # ended once
        state = alert_state.get(conn, "j")
        assert state is not None and (state.failures, state.last_alert_kind) == (0, None)
