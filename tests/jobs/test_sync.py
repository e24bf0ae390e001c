"""``jobctl sync`` from local files: counts, no-op re-syncs, removal, bad records, atomicity."""

from __future__ import annotations

import json
import random
import shutil
import signal
import string
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli
from tests.fixtures.httpserver import http_server
from tests.jobs import (
    PERMITS_SOURCE,
    checksum,
    configure,
    counts,
    expect,
    gen_command,
    gen_feed,
    key_of,
    last_run,
    latest,
    load_records,
    parse_gen_stats,
    runs,
    source_stats,
    stored,
    sync,
    sync_fails,
    table_exists,
    wait_until,
    write_json,
    xmins,
)

N = 3000


def test_counts_first_load_identical_forced_and_changed(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    v1 = gen_feed(N)
    v2 = gen_feed(N, change_pct=5)
    assert v1.written == N and v2.changed > 50 and v2.new == 30
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"

    # (a) first load
    shutil.copy(v1.path, feed)
    sync(cli)
    run = last_run(cli)
    assert run["status"] == "completed"
    assert counts(run) == expect(N, new=N)
    assert source_stats(run)["first_load"] is True
    assert run["source"] == str(feed.resolve())
    assert psql.execute("SELECT count(*) FROM permits").fetchone() == (N,)
    assert psql.execute("SELECT count(*) FROM permits WHERE removed_at IS NOT NULL").fetchone() == (
        0,
    )
    assert stored(psql) == {key_of(r): r for r in load_records(v1.path)}
    before = xmins(psql)
    sum_before = checksum(psql)

    # (b) identical feed: recognised by its content digest, nothing read or written
    sync(cli)
    run = last_run(cli)
    assert counts(run) == expect(N, unchanged=N)
    assert source_stats(run)["not_modified"] is True
    assert "sha256" in source_stats(run)["reason"]
    assert xmins(psql) == before and checksum(psql) == sum_before

    # (b) identical feed with --force: every record re-read and compared, none rewritten
    sync(cli, "--force")
    run = last_run(cli)
    assert counts(run) == expect(N, unchanged=N)
    info = source_stats(run)
    assert "not_modified" not in info and info["records"] == N and info["rows_sent"] == 0
    assert xmins(psql) == before  # same xmin and updated_at: no row rewritten
    assert checksum(psql) == sum_before

    # (c) the generator's next day: --change-pct 5
    shutil.copy(v2.path, feed)
    sync(cli)
    run = last_run(cli)
    assert counts(run) == expect(
        v2.written, new=v2.new, updated=v2.changed, unchanged=N - v2.changed
    )
    assert psql.execute("SELECT count(*) FROM permits").fetchone() == (N + v2.new,)
    assert psql.execute("SELECT count(*) FROM permits WHERE removed_at IS NOT NULL").fetchone() == (
        0,
    )
    assert stored(psql) == {key_of(r): r for r in load_records(v2.path)}
    after = xmins(psql)
    rewritten = {k for k in before if after[k] != before[k]}
    assert len(rewritten) == v2.changed
    assert all(after[k][1] > before[k][1] for k in rewritten)
    assert len(set(after) - set(before)) == v2.new

    # the runs table shows new/updated/unchanged/errors of each run
    table = cli("runs", "list", "--job", "sync")
    assert table.code == 0
    lines = table.stdout.splitlines()
    assert f"{v2.new}/{v2.changed}/{N - v2.changed}/0" in lines[1]
    assert f"0/0/{N}/0" in lines[2] and f"0/0/{N}/0" in lines[3]
    assert f"{N}/0/0/0" in lines[4]


def test_removed_records_and_their_return(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"
    write_json(feed, records)
    sync(cli)
    first_sync = psql.execute("SELECT last_synced_at FROM jobctl.feed_state").fetchone()
    assert first_sync is not None

    gone = [records[i] for i in range(5, 3000, 300)]
    assert len(gone) == 10
    gone_keys = {key_of(r) for r in gone}
    write_json(feed, [r for r in records if key_of(r) not in gone_keys])
    sync(cli)
    run = last_run(cli)
    assert counts(run) == expect(N - 10, unchanged=N - 10, removed=10)
    removed = psql.execute(
        "SELECT permit_num, revision_num FROM permits WHERE removed_at IS NOT NULL"
    ).fetchall()
    assert set(removed) == gone_keys
    assert psql.execute("SELECT count(*) FROM permits").fetchone() == (N,)
    second_sync = psql.execute("SELECT last_synced_at FROM jobctl.feed_state").fetchone()
    assert second_sync is not None and second_sync[0] > first_sync[0]
    # the view: a removed row was last seen by the first sync, the others by the second
    seen = dict(
        ((r[0], r[1]), r[2])
        for r in psql.execute("SELECT permit_num, revision_num, last_seen_at FROM permits_v")
    )
    assert len(seen) == N
    assert {seen[k] for k in gone_keys} == {first_sync[0]}
    assert {v for k, v in seen.items() if k not in gone_keys} == {second_sync[0]}

    # the same feed again (digest shortcut): still removed, nothing counted twice
    sync(cli)
    assert counts(last_run(cli)) == expect(N - 10, unchanged=N - 10)

    # an empty feed is refused rather than taken as "everything was removed"
    before = checksum(psql)
    write_json(feed, [])
    sync(cli, code=1)
    assert "no usable records" in latest(psql)["error_message"]
    assert checksum(psql) == before

    # they come back: removed_at cleared, counted as restored (records_updated stays
    # "active rows whose data changed")
    write_json(feed, records)
    sync(cli)
    run = last_run(cli)
    assert counts(run) == expect(N, unchanged=N - 10)
    assert source_stats(run)["restored"] == 10 and source_stats(run)["updated"] == 0
    assert psql.execute("SELECT count(*) FROM permits WHERE removed_at IS NOT NULL").fetchone() == (
        0,
    )
    third_sync = psql.execute("SELECT last_synced_at FROM jobctl.feed_state").fetchone()
    assert third_sync is not None
    back = psql.execute(
        "SELECT DISTINCT last_seen_at FROM permits_v WHERE (permit_num, revision_num) IN ("
        + ", ".join(["(%s, %s)"] * len(gone_keys))
        + ")",
        [x for k in sorted(gone_keys) for x in k],
    ).fetchall()
    assert back == [(third_sync[0],)]
    assert stored(psql) == {key_of(r): r for r in records}


def test_duplicate_keys_last_occurrence_wins(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"

    def variant(i: int, status: str) -> dict[str, Any]:
        return {**records[i], "STATUS": status}

    # first load: record 5 twice, record 20 three times (later copies differ)
    dups = [variant(20, "dup B1"), variant(20, "dup B2")]
    write_json(feed, [*records[:100], variant(5, "dup A"), *records[100:], *dups])
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(N + 3, new=N, errors=3)
    data = stored(psql)
    assert len(data) == N
    assert data[key_of(records[5])]["STATUS"] == "dup A"
    assert data[key_of(records[20])]["STATUS"] == "dup B2"
    assert data[key_of(records[6])] == records[6]
    samples = source_stats(run)["error_samples"]
    dup_keys = {s["key"] for s in samples if "duplicate" in s["reason"]}
    assert dup_keys == {"/".join(key_of(records[5])), "/".join(key_of(records[20]))}

    # re-sync: 5 and 20 once each (original values), 7 twice (the later copy wins)
    write_json(feed, [*records[:50], variant(7, "dup C1"), *records[50:], variant(7, "dup C2")])
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(N + 2, updated=3, unchanged=N - 3, errors=2)
    data = stored(psql)
    assert data[key_of(records[5])] == records[5]
    assert data[key_of(records[20])] == records[20]
    assert data[key_of(records[7])]["STATUS"] == "dup C2"
    samples = source_stats(run)["error_samples"]
    assert any(
        s["key"] == "/".join(key_of(records[7])) and "duplicate" in s["reason"] for s in samples
    )


JUNK_COST = "DO NOT UPDATE OR DELETE THIS INFO FIELD"


def test_malformed_records_are_counted_and_sampled(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    bad: list[Any] = [dict(r) for r in records]
    del bad[10]["PERMIT_NUM"]  # missing key field
    bad[11]["REVISION_NUM"] = None  # null key field
    bad[12]["PERMIT_NUM"] = "  "  # blank key field
    bad[13] = 42  # not an object
    configure(project, PERMITS_SOURCE)
    write_json(project / "feed.json", bad)
    sync(cli)
    run = latest(psql)
    assert run["status"] == "completed"
    assert counts(run) == expect(N, new=N - 4, errors=4)
    samples = source_stats(run)["error_samples"]
    by_position = {s["position"]: s["reason"] for s in samples}
    assert set(by_position) == {11, 12, 13, 14}  # 1-based element numbers
    assert "PERMIT_NUM" in by_position[11] and "missing" in by_position[11]
    assert "REVISION_NUM" in by_position[12]
    assert "PERMIT_NUM" in by_position[13]
    assert psql.execute("SELECT count(*) FROM permits").fetchone() == (N - 4,)


def test_bad_types_over_the_error_ratio_fail_and_change_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    junk = [i for i, r in enumerate(records) if r["EST_CONST_COST"] == JUNK_COST]
    assert 0.01 * N < len(junk) < 0.1 * N
    configure(project, PERMITS_SOURCE)
    shutil.copy(gen_feed(N).path, project / "feed.json")
    sync(cli)
    before = checksum(psql)

    typed = PERMITS_SOURCE + 'types = { EST_CONST_COST = "float", GEO_ID = "int" }\n'
    configure(project, typed)
    result = sync(cli, code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    message = run["error_message"]
    assert f"{len(junk)} of {N} records are bad" in message and "max_error_ratio" in message
    assert "; most often: " in message and "(e.g. record " in message, message
    assert "nothing was applied" in message
    assert "max_error_ratio" in result.stderr
    assert checksum(psql) == before
    # the failed run still says how many records were bad, and which
    assert run["records_errors"] == len(junk) and run["records_total"] == N
    samples = source_stats(run)["error_samples"]
    assert len(samples) == 20
    assert samples[0]["position"] == junk[0] + 1
    assert "EST_CONST_COST" in samples[0]["reason"] and "not a float" in samples[0]["reason"]

    # under a higher ratio the same feed completes: bad records are counted and sampled,
    # keep their stored version and are not marked removed (they are in the feed)
    configure(project, typed + "max_error_ratio = 0.1\n")
    sync(cli)
    run = latest(psql)
    assert run["status"] == "completed"
    priced = [r for r in records if isinstance(r["EST_CONST_COST"], int)]  # 1 → 1.0: updated
    assert counts(run) == expect(
        N, updated=len(priced), unchanged=N - len(priced) - len(junk), errors=len(junk)
    )
    samples = source_stats(run)["error_samples"]
    assert len(samples) == 20 and samples[-1]["position"] == junk[19] + 1
    assert samples[0]["key"] == "/".join(key_of(records[junk[0]]))
    data = stored(psql)
    assert len(data) == N
    assert data[key_of(records[junk[0]])] == records[junk[0]]
    assert data[key_of(priced[0])]["EST_CONST_COST"] == float(priced[0]["EST_CONST_COST"])
    assert isinstance(data[key_of(priced[0])]["GEO_ID"], int)


def test_record_with_a_bad_type_is_not_marked_removed(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)[:200]
    configure(project, PERMITS_SOURCE + 'types = { GEO_ID = "int" }\n')
    feed = project / "feed.json"
    write_json(feed, records)
    sync(cli)
    before = checksum(psql)
    records[7]["GEO_ID"] = "not a number"
    write_json(feed, records)
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(200, unchanged=199, errors=1)
    (sample,) = source_stats(run)["error_samples"]
    assert sample["position"] == 8 and sample["key"] == "/".join(key_of(records[7]))
    assert "GEO_ID" in sample["reason"] and "not an int" in sample["reason"]
    assert checksum(psql) == before


def test_nul_character_is_a_record_error(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"
    text = write_json(feed, records).read_text()
    first, second = json.dumps(records[3]), json.dumps(records[4])
    text = text.replace(first, first.replace('"STATUS": "', '"STATUS": "x\\u0000y'))
    text = text.replace(second, second.replace('"PERMIT_NUM": "', '"PERMIT_NUM": "\\u0000'))
    feed.write_text(text)
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(N, new=N - 2, errors=2)
    reasons = [s["reason"] for s in source_stats(run)["error_samples"]]
    assert len(reasons) == 2 and all("NUL" in r for r in reasons)
    # on a re-sync too: a new record with a NUL, a stored one that now has a NUL (kept
    # as stored, not marked removed); the two above are clean now
    records[3]["STATUS"] = "changed"
    stained = {**records[9], "DESCRIPTION": "a\x00b"}
    extra = {**records[0], "PERMIT_NUM": "99 999999 NUL", "DESCRIPTION": "a\x00b"}
    write_json(feed, [*records[:9], stained, *records[10:], extra])
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(N + 1, new=2, unchanged=N - 3, errors=2)
    samples = source_stats(run)["error_samples"]
    assert [s["position"] for s in samples] == [10, N + 1]
    data = stored(psql)
    assert data[key_of(records[3])]["STATUS"] == "changed"
    assert data[key_of(records[9])] == records[9]
    assert len(data) == N


def test_the_text_backslash_u0000_is_no_nul(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """``"C:\\u0000"`` in JSON is a backslash and the letters u0000: stored as it is,
    in the key too; ``"\\\u0000"`` (a backslash, then a NUL) is still refused."""
    records = load_records(gen_feed(N).path)[:3]
    records[0]["DESCRIPTION"] = "C:\\u0000\\file"
    records[1]["PERMIT_NUM"] = "\\u0000 key"
    records[2]["DESCRIPTION"] = "\\\x00"
    configure(project, PERMITS_SOURCE + "max_error_ratio = 0.5\n")
    write_json(project / "feed.json", records)
    sync(cli)
    run = latest(psql)
    assert counts(run) == expect(3, new=2, errors=1)
    assert [s["position"] for s in source_stats(run)["error_samples"]] == [3]
    data = stored(psql)
    assert data[key_of(records[0])]["DESCRIPTION"] == "C:\\u0000\\file"
    assert data[key_of(records[1])] == records[1]


def test_truncated_feed_fails_and_changes_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    v1, v2 = gen_feed(N), gen_feed(N, change_pct=5)
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"
    data = v2.path.read_bytes()
    # on a first load: no table is left behind
    feed.write_bytes(data[: len(data) // 2])
    sync(cli, code=1)
    assert latest(psql)["status"] == "failed"
    assert not table_exists(psql, "permits")
    shutil.copy(v1.path, feed)
    sync(cli)
    before = checksum(psql)
    state = psql.execute("SELECT * FROM jobctl.feed_state").fetchall()

    # on a re-sync: half of the next day's feed, cut in the middle of a record
    feed.write_bytes(data[: len(data) // 2])
    result = sync(cli, code=1)
    run = latest(psql)
    assert run["status"] == "failed"
    message = run["error_message"]
    assert "JSON" in message and "truncated" in message, message
    assert "Traceback" not in message and "\n" not in message
    assert message in result.stderr
    assert checksum(psql) == before
    assert psql.execute("SELECT * FROM jobctl.feed_state").fetchall() == state
    # the whole feed, once it arrives, applies normally
    shutil.copy(v2.path, feed)
    sync(cli)
    assert counts(latest(psql)) == expect(
        v2.written, new=v2.new, updated=v2.changed, unchanged=N - v2.changed
    )


def test_dry_run_reports_counts_and_changes_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    v1, v2 = gen_feed(N), gen_feed(N, change_pct=5)
    configure(project, PERMITS_SOURCE)
    feed = project / "feed.json"
    shutil.copy(v1.path, feed)
    result = sync(cli, "--dry-run")
    assert f"new {N}" in result.stderr
    run = latest(psql)
    assert run["status"] == "completed" and run["params"]["dry_run"] == "true"
    assert counts(run) == expect(N, new=N)
    assert not table_exists(psql, "permits")
    assert psql.execute("SELECT count(*) FROM jobctl.feed_state").fetchone() == (0,)

    sync(cli)
    before = checksum(psql)
    state = psql.execute("SELECT * FROM jobctl.feed_state").fetchall()
    shutil.copy(v2.path, feed)
    result = sync(cli, "--dry-run")
    expected = expect(v2.written, new=v2.new, updated=v2.changed, unchanged=N - v2.changed)
    assert counts(latest(psql)) == expected
    assert f"updated {v2.changed}" in result.stderr
    assert checksum(psql) == before
    assert psql.execute("SELECT * FROM jobctl.feed_state").fetchall() == state
    # the dry run did not record the new digest: the real sync still applies the feed
    sync(cli)
    assert counts(latest(psql)) == expected


def test_data_quality_checks_are_recorded_and_only_warn(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    records = load_records(gen_feed(N).path)
    refusals = sum(r["STATUS"] == "Refusal Notice" for r in records)
    assert refusals > 0
    configure(
        project,
        PERMITS_SOURCE
        + f"""
[[sources.permits.checks]]
name = "active_rows"
sql = "SELECT count(*) FROM permits WHERE removed_at IS NULL"
min = {N}

[[sources.permits.checks]]
name = "refusals"
sql = "SELECT count(*) FROM permits WHERE data->>'STATUS' = 'Refusal Notice'"
max = 0

[[sources.permits.checks]]
name = "broken"
sql = "SELECT count(*) FROM no_such_table"
min = 0
""",
    )
    shutil.copy(gen_feed(N).path, project / "feed.json")
    result = sync(cli)
    run = latest(psql)
    assert run["status"] == "completed" and counts(run) == expect(N, new=N)
    checks = {c["name"]: c for c in source_stats(run)["checks"]}
    assert checks["active_rows"]["value"] == N and checks["active_rows"]["ok"] is True
    assert checks["refusals"]["value"] == refusals and checks["refusals"]["ok"] is False
    assert checks["broken"]["ok"] is False and "no_such_table" in checks["broken"]["error"]
    assert run["stats"]["warnings"] == ["check 'refusals' failed", "check 'broken' failed"]
    assert "refusals" in result.stderr
    assert psql.execute("SELECT count(*) FROM permits").fetchone() == (N,)
    # an unchanged feed is still a sync: the checks run and are recorded again
    sync(cli)
    run = latest(psql)
    assert source_stats(run)["not_modified"] is True
    assert {c["name"]: c.get("value") for c in source_stats(run)["checks"]} == {
        "active_rows": N,
        "refusals": refusals,
        "broken": None,
    }
    assert run["stats"]["warnings"] == ["check 'refusals' failed", "check 'broken' failed"]


BIG = 100_000


@pytest.fixture(scope="module", autouse=True)
def big_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """The kill -9 test's large feed, generated in the background while other tests run."""
    path = tmp_path_factory.mktemp("big") / "feed.json"
    command = gen_command(BIG, None, "json", path)
    generator = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    yield path, generator
    if generator.poll() is None:
        generator.kill()
    generator.communicate()


def test_kill_9_during_the_merge_changes_nothing(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], big_feed: tuple[Path, Any]
) -> None:
    big, generator = big_feed
    configure(project, PERMITS_SOURCE)
    shutil.copy(gen_feed(N).path, project / "feed.json")  # the first N records of the big feed
    sync(cli)
    before = checksum(psql)
    state = psql.execute("SELECT * FROM jobctl.feed_state").fetchall()
    _, err = generator.communicate(timeout=60)
    assert generator.returncode == 0 and parse_gen_stats(err)["records_written"] == BIG

    proc = cli.popen("sync", "--source", "permits", "--file", str(big))
    try:
        victim = wait_until(
            lambda: psql.execute("SELECT id FROM jobctl.runs WHERE status = 'running'").fetchone(),
            what="a running sync",
        )
        # the merge is under way: batches of keys are streaming into the server
        _comparing(psql)
        time.sleep(0.5)
        assert proc.poll() is None, "the sync ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    rows = wait_until(
        lambda: [r for r in runs(cli) if r["status"] == "abandoned"], what="an abandoned run"
    )
    assert [r["id"] for r in rows] == [victim[0]]
    assert checksum(psql) == before
    assert psql.execute("SELECT * FROM jobctl.feed_state").fetchall() == state

    result = sync(cli, "--source", "permits", "--file", str(big))
    run = last_run(cli)
    assert run["status"] == "completed", result.stderr
    assert counts(run) == expect(BIG, new=BIG - N, unchanged=N)
    assert psql.execute("SELECT count(*) FROM permits WHERE removed_at IS NULL").fetchone() == (
        BIG,
    )


def _comparing(psql: psycopg.Connection[Any]) -> int:
    """The backend of a re-sync that is staging and comparing batches (its pid)."""
    row = wait_until(
        lambda: psql.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND state IN ('active', 'idle in transaction') AND query LIKE '%_jobctl_keys%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone(),
        what="a re-sync comparing batches",
    )
    return int(row[0])


def _big_ready(big_feed: tuple[Path, Any]) -> Path:
    big, generator = big_feed
    generator.wait(timeout=60)
    assert generator.returncode == 0
    return big


@pytest.mark.parametrize("fault", ["connection killed", "SIGTERM"])
def test_a_resync_stopped_mid_stream_changes_nothing(
    cli: Cli,
    project: Path,
    psql: psycopg.Connection[Any],
    big_feed: tuple[Path, Any],
    fault: str,
) -> None:
    """The server compares while the client parses: a fault then must still roll back
    everything, stop both threads, and be recorded as what it was."""
    configure(project, PERMITS_SOURCE)
    shutil.copy(gen_feed(N).path, project / "feed.json")
    sync(cli)
    before = checksum(psql)
    state = psql.execute("SELECT * FROM jobctl.feed_state").fetchall()
    big = _big_ready(big_feed)

    proc = cli.popen("sync", "--source", "permits", "--file", str(big))
    try:
        backend = _comparing(psql)
        assert proc.poll() is None, "the sync ended before the fault"
        if fault == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            psql.execute("SELECT pg_terminate_backend(%s)", (backend,))
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (143 if fault == "SIGTERM" else 1), err
    assert "Traceback" not in err and "another command is already in progress" not in err
    run = latest(psql)
    if fault == "SIGTERM":
        assert (run["status"], run["error_message"]) == ("cancelled", "interrupted by SIGTERM")
    else:
        assert run["status"] == "failed" and "sync" in run["error_message"], run
    assert checksum(psql) == before
    assert psql.execute("SELECT * FROM jobctl.feed_state").fetchall() == state
    # nothing of the run is left on the server: no statement, no open transaction
    wait_until(
        lambda: (
            not psql.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone()
        ),
        timeout=10,
        what="the sync's backend to be gone",
    )

    sync(cli, "--source", "permits", "--file", str(big))
    assert counts(last_run(cli)) == expect(BIG, new=BIG - N, unchanged=N)


@pytest.mark.parametrize("fault", ["connection killed", "SIGTERM", "SIGKILL"])
def test_a_first_load_stopped_mid_copy_leaves_no_table(
    cli: Cli,
    project: Path,
    psql: psycopg.Connection[Any],
    big_feed: tuple[Path, Any],
    fault: str,
) -> None:
    """The first load writes its binary COPY from the main thread, which may then wait
    on the server: a fault there must still end the run as what it was, at once, and
    leave neither the table (created in the same transaction) nor a feed state."""
    configure(project, PERMITS_SOURCE)
    big = _big_ready(big_feed)
    proc = cli.popen("sync", "--source", "permits", "--file", str(big))
    try:
        row = wait_until(
            lambda: psql.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND query LIKE 'COPY%%permits%%BINARY%%'"
                " AND pid <> pg_backend_pid()"
            ).fetchone(),
            what="a first load copying",
        )
        time.sleep(0.3)  # well inside the stream
        assert proc.poll() is None, "the sync ended before the fault"
        if fault == "connection killed":
            psql.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        else:
            proc.send_signal(getattr(signal, fault))
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    expected = {"connection killed": 1, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL}[fault]
    assert proc.returncode == expected, err
    assert "Traceback" not in err
    if fault == "SIGKILL":
        rows = wait_until(
            lambda: [r for r in runs(cli) if r["status"] == "abandoned"], what="an abandoned run"
        )
        assert len(rows) == 1
    else:
        run = latest(psql)
        if fault == "SIGTERM":
            assert (run["status"], run["error_message"]) == ("cancelled", "interrupted by SIGTERM")
        else:
            assert run["status"] == "failed" and "sync" in run["error_message"], run
    wait_until(
        lambda: (
            not psql.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[0],)).fetchone()
        ),
        timeout=10,
        what="the sync's backend to be gone",
    )
    assert psql.execute("SELECT to_regclass('permits')").fetchone() == (None,)
    assert psql.execute("SELECT count(*) FROM jobctl.feed_state").fetchone() == (0,)

    sync(cli, "--source", "permits", "--file", str(big))
    assert counts(last_run(cli)) == expect(BIG, new=BIG)


def test_a_first_load_stopped_while_its_key_is_built_leaves_no_table(
    cli: Cli, project: Path, psql: psycopg.Connection[Any], db_url: str
) -> None:
    """The primary key is added after the COPY: SIGTERM in that statement ends the run
    as cancelled, cancels the statement, and leaves neither table nor feed state.

    The statement is held still by another transaction that has created, and not yet
    committed, a relation with the key's name: the index waits for it to end.
    """
    configure(project, PERMITS_SOURCE)
    shutil.copy(gen_feed(N).path, project / "feed.json")
    with psycopg.connect(db_url) as blocker:
        blocker.execute("CREATE TABLE permits_pkey (x int)")  # not committed
        proc = cli.popen("sync", "--source", "permits")
        try:
            row = wait_until(
                lambda: psql.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state = 'active' AND wait_event_type = 'Lock'"
                    " AND query LIKE 'ALTER TABLE%%permits%%PRIMARY KEY%%'"
                ).fetchone(),
                what="the first load adding its key",
            )
            assert proc.poll() is None, "the sync ended before the fault"
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 143, err
        assert "Traceback" not in err
        # cancelled on the server too: the statement is no longer waiting
        wait_until(
            lambda: (
                not psql.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND query LIKE 'ALTER%%'"
                    " AND state = 'active'",
                    (row[0],),
                ).fetchone()
            ),
            timeout=10,
            what="the key's statement to be cancelled",
        )
        blocker.rollback()
    run = latest(psql)
    assert (run["status"], run["error_message"]) == ("cancelled", "interrupted by SIGTERM")
    assert psql.execute("SELECT to_regclass('permits')").fetchone() == (None,)
    assert psql.execute("SELECT count(*) FROM jobctl.feed_state").fetchone() == (0,)

    sync(cli, "--source", "permits")
    assert counts(last_run(cli)) == expect(N, new=N)
    assert psql.execute(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'permits'::regclass AND contype = 'p'"
    ).fetchone() == (1,)


def test_two_syncs_at_once_one_runs_one_skips(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    body = gen_feed(N).path.read_bytes()
    with http_server() as srv:
        srv.serve("/permits.json", body, delay=2.5)
        configure(
            project,
            f"""
[sources.permits]
url = "{srv.url("/permits.json")}"
key = ["PERMIT_NUM", "REVISION_NUM"]
table = "permits"
""",
        )
        first = cli.popen("sync")
        running = wait_until(
            lambda: psql.execute(
                "SELECT id, pid FROM jobctl.runs WHERE status = 'running'"
            ).fetchone(),
            what="a running sync",
        )
        second = cli("sync")
        assert first.wait(timeout=60) == 0, first.communicate()
        first.communicate()
    assert second.code == 75, second.stderr
    rows = runs(cli)
    assert [r["status"] for r in rows] == ["skipped", "completed"]
    skipped = rows[0]["error_message"]
    assert f"run {running[0]}" in skipped and f"pid {running[1]}" in skipped
    assert f"run {running[0]}" in second.stderr
    assert counts(rows[1]) == expect(N, new=N)
    assert len(srv.requests_for("/permits.json")) == 1


def test_a_wrapped_local_json_feed_without_its_record_path_fails_saying_so(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """A CKAN-style answer saved to a file, read with the default record path: the run
    fails naming the setting (it completed with zero records before), and with the
    path set the feed syncs."""
    body = {"success": True, "result": {"records": [{"id": 1}, {"id": 2}]}}
    (project / "ckan.json").write_text(json.dumps(body))
    source = """
[sources.ckan]
path = "ckan.json"
key = ["id"]
table = "ckan"
"""
    configure(project, source)
    message = sync_fails(cli, psql)
    assert "no array at the top level (set record_path" in message, message
    assert not table_exists(psql, "ckan")

    configure(project, source + 'record_path = "result.records.item"\n')
    sync(cli)
    assert counts(last_run(cli)) == expect(2, new=2)


def test_a_source_pointed_at_another_feeds_view_is_refused(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """``<table>_v`` is the view jobctl keeps beside a feed table: a source whose table
    is that name is told so (the upsert failed on "column xmax does not exist")."""
    write_json(project / "a.json", [{"id": 1}, {"id": 2}])
    configure(project, '[sources.a]\npath = "a.json"\nkey = ["id"]\ntable = "geo"\n')
    sync(cli)
    configure(project, '[sources.b]\npath = "a.json"\nkey = ["id"]\ntable = "geo_v"\n')
    result = sync(cli, code=2)
    assert "'geo_v' is a view, not a table jobctl can write" in result.stderr
    assert "Traceback" not in result.stderr
    assert psql.execute("SELECT count(*) FROM geo_v").fetchone() == (2,)
    assert psql.execute(
        "SELECT relkind::text FROM pg_class WHERE relname = 'geo_v'"
    ).fetchone() == ("v",)


def test_a_zipped_csv_feed_syncs_and_is_known_unchanged_by_its_digest(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    body = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(500))
    with zipfile.ZipFile(project / "wards.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("wards/wards.csv", body)
    configure(
        project,
        '[sources.wards]\npath = "wards.zip"\nformat = "csv"\nkey = ["id"]\ntable = "wards"\n',
    )
    sync(cli)
    assert counts(last_run(cli)) == expect(500, new=500)
    assert psql.execute("SELECT data->>'name' FROM wards WHERE id = '7'").fetchone() == ("n7",)
    sync(cli)  # the same archive: its digest is the last sync's
    assert "same content as the last sync" in json.dumps(last_run(cli))


def test_a_key_field_named_wrong_is_said_with_the_fields_the_records_have(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """Every record is bad when the key is named as the feed does not: the refusal says
    why and which fields there are (a trailing space, another case), not just a ratio."""
    (project / "wards.csv").write_text("ID ,name\n1,a\n2,b\n3,c\n")
    configure(
        project,
        '[sources.wards]\npath = "wards.csv"\nformat = "csv"\nkey = ["id"]\ntable = "wards"\n',
    )
    message = sync_fails(cli, psql)
    assert message == (
        "wards: 3 of 3 records are bad (100.0% > max_error_ratio 1.0%); most often: missing"
        " key field 'id' (e.g. record 1); the records have 'ID ', 'name'; nothing was applied"
    )
    assert not table_exists(psql, "wards")


def test_a_key_too_long_for_the_index_is_that_records_error_not_the_feeds(
    cli: Cli, project: Path, psql: psycopg.Connection[Any]
) -> None:
    """A btree entry holds ~2.7 kB: one hostile 10 kB key failed the whole feed (the
    primary key's build refused it). Now it is one bad record, first load and re-sync."""
    rng = random.Random(7)
    long_key = "".join(rng.choice(string.ascii_letters) for _ in range(10_000))
    good = [{"a": str(i), "b": "x", "v": i} for i in range(300)]
    feed = [*good[:150], {"a": long_key, "b": "x", "v": -1}, *good[150:]]
    feed.append({"a": "é" * 700, "b": "ü" * 700, "v": -2})  # 2,800 bytes in two parts
    write_json(project / "k.json", feed)
    configure(
        project,
        '[sources.k]\npath = "k.json"\nkey = ["a", "b"]\ntable = "k"\nmax_error_ratio = 0.05\n',
    )
    sync(cli)
    run = last_run(cli)
    assert counts(run) == expect(302, new=300, errors=2)
    samples = source_stats(run, "k")["error_samples"]
    assert [s["reason"] for s in samples] == [
        "key is 10,001 bytes: more than a PostgreSQL index holds (at most 2,600 bytes)",
        "key is 2,800 bytes: more than a PostgreSQL index holds (at most 2,600 bytes)",
    ]
    assert all(len(s["key"]) <= 80 for s in samples)
    write_json(project / "k.json", [*feed, {"a": "new", "b": "x", "v": 0}])
    sync(cli)  # the re-sync path: the same records refused, nothing marked removed
    assert counts(last_run(cli)) == expect(303, new=1, unchanged=300, errors=2)
    assert psql.execute("SELECT count(*) FROM k WHERE removed_at IS NULL").fetchone() == (301,)
