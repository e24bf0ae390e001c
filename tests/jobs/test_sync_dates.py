"""``sync --date``: a date is a day in each source's zone, and a partial day is never done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobctl.config import Settings, load_settings
from jobctl.errors import UsageError
from jobctl.jobs import sync
from tests.conftest import Cli
from tests.jobs import PERMITS_SOURCE, configure, runs, write_json

# 19:52 on 2026-11-10 in Toronto, 00:52 UTC on 2026-11-11: "yesterday" on a UTC host
# is a day still in progress in Toronto.
EVENING = datetime(2026, 11, 11, 0, 52, tzinfo=UTC)
TORONTO = PERMITS_SOURCE + 'timezone = "America/Toronto"\n'


def _settings(project: Path, body: str) -> Settings:
    configure(project, body)
    return load_settings(config_path=project / "jobctl.toml", environ={"HOME": str(project)})


def test_a_day_not_ended_in_the_zone_of_a_yesterday_source_is_refused(project: Path) -> None:
    settings = _settings(project, TORONTO + 'date = "yesterday"\n')
    with pytest.raises(UsageError) as refused:
        sync.plan(settings, on_date="2026-11-10", now=EVENING)
    assert str(refused.value) == (
        "--date 2026-11-10 has not ended in America/Toronto: it ends at 2026-11-11 00:00 EST, "
        "in 4h08m; a run for it would record a partial day as done (--force takes it anyway)"
    )
    # Ended in Toronto: taken. Forced: the day in progress is taken too.
    assert sync.plan(settings, on_date="2026-11-09", now=EVENING).date.isoformat() == "2026-11-09"
    forced = sync.plan(settings, on_date="2026-11-10", now=EVENING, force=True)
    assert forced.date is not None and forced.date.isoformat() == "2026-11-10"
    # --force never takes a day that has not begun there (it is 2026-11-11 in UTC).
    with pytest.raises(UsageError, match="--date 2026-11-11 is in the future: it starts at"):
        sync.plan(settings, on_date="2026-11-11", now=EVENING, force=True)


def test_a_today_source_takes_the_day_in_progress_but_not_the_next(project: Path) -> None:
    settings = _settings(project, TORONTO)
    # What every tick of a `date = "today"` source reads, so no --force is needed.
    assert sync.plan(settings, on_date="2026-11-10", now=EVENING).date is not None
    with pytest.raises(UsageError, match="--date 2026-11-11 is in the future") as future:
        sync.plan(settings, on_date="2026-11-11", now=EVENING)
    assert "America/Toronto" in str(future.value)


def test_the_latest_zone_decides_for_several_sources(project: Path) -> None:
    body = (
        TORONTO
        + 'date = "yesterday"\n'
        + '\n[sources.tokyo]\npath = "t.json"\nkey = "id"\ntable = "tokyo"\n'
        + 'timezone = "Asia/Tokyo"\ndate = "yesterday"\n'
    )
    settings = _settings(project, body)
    # 2026-11-10 ended in Tokyo at 15:00 UTC but not yet in Toronto.
    assert sync.plan(settings, names=["tokyo"], on_date="2026-11-10", now=EVENING).date
    with pytest.raises(UsageError, match="has not ended in America/Toronto"):
        sync.plan(settings, on_date="2026-11-10", now=EVENING)


def test_the_command_refuses_before_any_run_row(cli: Cli, project: Path) -> None:
    configure(project, TORONTO + 'date = "yesterday"\n')
    write_json(project / "feed.json", [{"PERMIT_NUM": "1", "REVISION_NUM": "0"}])
    today = datetime.now(ZoneInfo("America/Toronto")).date()
    refused = cli("sync", "--date", today.isoformat())
    assert refused.code == 2, refused.stderr
    assert f"--date {today} has not ended in America/Toronto" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert runs(cli) == []
    done = cli("sync", "--date", (today - timedelta(days=1)).isoformat())
    assert done.code == 0, done.stderr
    forced = cli("sync", "--date", today.isoformat(), "--force")
    assert forced.code == 0, forced.stderr
    assert [r["status"] for r in runs(cli)] == ["completed", "completed"]
