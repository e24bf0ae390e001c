"""The project's own feed generator (tests/fixtures/feeds.py), which tests and bench rely on."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures import feeds
from tests.fixtures.feeds import FIELDS, FORMATS, JUNK_COST, FeedStats, generate, iter_records
from tests.jobs import parse_gen_stats

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(feeds.__file__)

Key = tuple[str, str]


def _keyed(records: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    by_key = {(r["PERMIT_NUM"], r["REVISION_NUM"]): r for r in records}
    assert len(by_key) == len(records), "duplicate keys"
    return by_key


def _text(stats_and_path: tuple[FeedStats, Path]) -> bytes:
    return stats_and_path[1].read_bytes()


def _make(tmp_path: Path, name: str, records: int, **kwargs: Any) -> tuple[FeedStats, Path]:
    path = tmp_path / name
    return generate(path, records, **kwargs), path


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    for fmt in FORMATS:
        a = _make(tmp_path, f"a.{fmt}", 400, change_pct=5, fmt=fmt)
        b = _make(tmp_path, f"b.{fmt}", 400, change_pct=5, fmt=fmt)
        assert a[0] == b[0] == FeedStats(base=400, changed=20, new=4, written=404)
        assert _text(a) == _text(b)
    v1 = _text(_make(tmp_path, "v1.json", 400))
    assert v1 != _text(_make(tmp_path, "a.json", 400, change_pct=5))
    assert v1 != _text(_make(tmp_path, "seed.json", 400, seed=7))


def test_bytes_are_pinned() -> None:
    """The bytes do not drift with the Python version, the platform or a refactoring.

    Cached benchmark feeds and every count a test derives rely on it; a deliberate
    change to the generator updates these digests.
    """
    v1, v2 = io.StringIO(), io.StringIO()
    generate(None, 200, out=v1)
    generate(None, 200, change_pct=10, new_pct=5, fmt="csv", out=v2)
    digests = [hashlib.sha256(f.getvalue().encode()).hexdigest()[:16] for f in (v1, v2)]
    assert digests == ["a0ca67cd92fea0cf", "ffb12a08a46e53f7"]


def test_printed_counts_match_the_records(tmp_path: Path) -> None:
    """Counting what v2 changed and added, by comparing it with v1, gives what it says."""
    n = 2000
    s1, p1 = _make(tmp_path, "v1.json", n)
    s2, p2 = _make(tmp_path, "v2.json", n, change_pct=5)
    assert s1 == FeedStats(base=n, changed=0, new=0, written=n)
    v1, v2 = json.loads(p1.read_bytes()), json.loads(p2.read_bytes())
    old, new = _keyed(v1), _keyed(v2)
    assert len(v1) == s1.written and len(v2) == s2.written == n + s2.new
    assert set(old) <= set(new)  # nothing removed
    changed = [k for k in old if new[k] != old[k]]
    added = [i for i, r in enumerate(v2) if (r["PERMIT_NUM"], r["REVISION_NUM"]) not in old]
    assert (len(changed), len(added)) == (s2.changed, s2.new) == (100, 20)
    for k in changed:  # one field, always to another value
        assert len([f for f in FIELDS if new[k][f] != old[k][f]]) == 1
    # new records are spread through the feed, not appended
    assert added[0] < len(v2) // 10 and added[-1] > len(v2) * 9 // 10
    # the base records keep their order
    assert [k for k in new if k in old] == list(old)


def test_new_pct_alone_and_zero_change(tmp_path: Path) -> None:
    only_new, path = _make(tmp_path, "n.ndjson", 500, new_pct=10, fmt="ndjson")
    assert only_new == FeedStats(base=500, changed=0, new=50, written=550)
    base = _keyed(list(iter_records(500)))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r for r in lines if (r["PERMIT_NUM"], r["REVISION_NUM"]) in base] == list(base.values())
    assert generate(None, 500, change_pct=0, new_pct=0, out=io.StringIO()) == FeedStats(
        500, 0, 0, 500
    )


def test_the_script_prints_the_counts_tests_parse(tmp_path: Path) -> None:
    out = tmp_path / "f.ndjson"
    argv = ["--records", "300", "--change-pct", "10", "--format", "ndjson", "-o", str(out)]
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, check=True, env=env
    )
    assert re.fullmatch(r"feeds: seed=42 format=ndjson records_written=\d+ .*\n", done.stderr)
    expected = generate(tmp_path / "in.ndjson", 300, change_pct=10, fmt="ndjson")
    assert parse_gen_stats(done.stderr) == {
        "records_written": expected.written,
        "base": 300,
        "changed": 30,
        "new": 3,
    }
    assert out.read_bytes() == (tmp_path / "in.ndjson").read_bytes()
    # as a module from the repository root, to stdout, under another hash seed: same bytes
    env["PYTHONHASHSEED"] = "2"
    as_module = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.feeds", *argv[:-2]],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    assert as_module.stdout == out.read_bytes()


def test_formats_hold_the_same_records(tmp_path: Path) -> None:
    records = list(iter_records(300, change_pct=5))
    _, array = _make(tmp_path, "f.json", 300, change_pct=5)
    _, nd = _make(tmp_path, "f.ndjson", 300, change_pct=5, fmt="ndjson")
    _, table = _make(tmp_path, "f.csv", 300, change_pct=5, fmt="csv")
    lines = array.read_text().splitlines()
    assert lines[0] == "[" and lines[-1] == "]"  # one record a line, like real dumps
    assert json.loads(array.read_bytes()) == records
    assert [json.loads(line) for line in nd.read_text().splitlines()] == records
    with table.open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == FIELDS
    assert rows[1:] == [["" if v is None else str(v) for v in r.values()] for r in records]
    empty = io.StringIO()
    generate(None, 0, out=empty)
    assert json.loads(empty.getvalue()) == []


def test_records_have_the_permits_shape(tmp_path: Path) -> None:
    stats, path = _make(tmp_path, "f.json", 4000)
    records = json.loads(path.read_bytes())
    assert 850 <= path.stat().st_size / stats.written <= 1000  # ~930 bytes a record
    _keyed(records)
    junk = 0
    for i, r in enumerate(records):
        assert tuple(r) == FIELDS
        assert re.fullmatch(r"\d\d \d{6} [A-Z]{3}", r["PERMIT_NUM"])
        if i % 8 == 7:  # every 8th: revision 01 of the permit before it
            assert r["REVISION_NUM"] == "01"
            assert r["PERMIT_NUM"] == records[i - 1]["PERMIT_NUM"]
        else:
            assert r["REVISION_NUM"] == "00"
        assert isinstance(r["GEO_ID"], int)
        cost = r["EST_CONST_COST"]
        assert cost is None or cost == JUNK_COST or (isinstance(cost, int) and cost > 0)
        junk += cost == JUNK_COST
        units, lost = r["DWELLING_UNITS_CREATED"], r["DWELLING_UNITS_LOST"]
        assert (units is None) == (lost is None) and lost in (None, 0, 1)
        applied = date.fromisoformat(r["APPLICATION_DATE"])
        assert applied.year == 2000 + int(r["PERMIT_NUM"][:2])
        if r["ISSUED_DATE"] is not None:
            assert date.fromisoformat(r["ISSUED_DATE"]) > applied
        if r["COMPLETED_DATE"] is not None:
            assert date.fromisoformat(r["COMPLETED_DATE"]) > date.fromisoformat(r["ISSUED_DATE"])
        assert len(r["DESCRIPTION"]) > 40 and r["DESCRIPTION"].isascii()
    assert 0.02 < junk / len(records) < 0.08  # typed syncs count these as bad records
    nulls = {f: sum(r[f] is None for r in records) for f in FIELDS}
    assert {f for f, n in nulls.items() if n} >= {"STREET_DIRECTION", "ISSUED_DATE", "BUILDER_NAME"}


def test_a_prefix_does_not_depend_on_the_feed_length() -> None:
    """The first N records of a big feed are the N-record feed (a test relies on it)."""
    assert list(iter_records(500)) == list(iter_records(2000))[:500]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--records", "-1"], "--records"),
        (["--change-pct", "150"], "150"),
        (["--new-pct", "-2"], "-2"),
        (["--format", "xml"], "xml"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        feeds.main([*argv, "-o", os.devnull])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert named in err.splitlines()[-1]


def test_unwritable_output_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-dir" / "f.json"
    with pytest.raises(SystemExit) as info:
        feeds.main(["--records", "10", "-o", str(missing)])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"feeds.py: cannot write {missing}: No such file or directory\n"
    )
