"""``jobctl deploy``: the shipped deploy/ is what examples/jobctl.toml generates, --check
names what differs, --out writes atomically, [deploy] values are validated, and on the
2026 DST days in Toronto each flavour fires as deploy/README.md says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from jobctl.schedule import Schedule

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "jobctl.toml"
SHIPPED = {
    "systemd": REPO / "deploy" / "systemd",
    "cron": REPO / "deploy",
    "k8s": REPO / "deploy" / "k8s",
}
TORONTO = ZoneInfo("America/Toronto")


def jobctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("jobctl", path=str(Path(sys.executable).parent)) or "jobctl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCTL_", "PG"))}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("target", list(SHIPPED))
def test_shipped_files_are_what_the_example_config_generates(target: str) -> None:
    result = jobctl(
        "--config", str(EXAMPLE), "deploy", target, "--check", str(SHIPPED[target]), cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def copy_example(tmp_path: Path, old: str, new: str) -> Path:
    config = tmp_path / "jobctl.toml"
    text = EXAMPLE.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("systemd", ["jobctl-sync.service", "jobctl-sync.timer"]),
        ("cron", ["crontab.example"]),
        ("k8s", ["configmap.yaml", "jobctl-sync.yaml"]),  # the ConfigMap holds the config
    ],
)
def test_check_names_the_file_a_config_change_affects(
    target: str, named: list[str], tmp_path: Path
) -> None:
    config = copy_example(tmp_path, 'schedule = "0 6 * * 1-5"', 'schedule = "0 5 * * 1-5"')
    result = jobctl(
        "--config", str(config), "deploy", target, "--check", str(SHIPPED[target]), cwd=tmp_path
    )
    assert result.returncode == 1
    names = [Path(line.split(":")[0]).name for line in result.stdout.splitlines()]
    assert names == named


def test_a_disabled_job_gets_no_files_and_check_says_which_are_left(tmp_path: Path) -> None:
    config = copy_example(tmp_path, "[jobs.table_sizes]\n", "[jobs.table_sizes]\nenabled = false\n")
    result = jobctl(
        "--config",
        str(config),
        "deploy",
        "systemd",
        "--check",
        str(SHIPPED["systemd"]),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == [
        f"{SHIPPED['systemd']}/jobctl-table-sizes.{kind}: not generated from the config"
        for kind in ("service", "timer")
    ]
    assert "jobs.table_sizes is disabled" in result.stderr


def test_out_writes_every_file_atomically(tmp_path: Path) -> None:
    out = tmp_path / "units"
    out.mkdir()
    stale = out / "jobctl-sync.service"
    stale.write_text("old\n")
    inode = stale.stat().st_ino
    result = jobctl("--config", str(EXAMPLE), "deploy", "systemd", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in SHIPPED["systemd"].iterdir()
    )
    # Replaced by a rename (a new inode), never rewritten in place; no temp file left.
    assert stale.stat().st_ino != inode
    for path in out.iterdir():
        assert path.read_text() == (SHIPPED["systemd"] / path.name).read_text()
        assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('image = "nginx"', "deploy.image"),
        ('executable = "jobctl"', "deploy.executable"),
        ('memory_limit = "lots"', "deploy.memory_limit"),
        ('namespace = "Prod"', "deploy.namespace"),
        ("colour = 1", "deploy.colour"),
    ],
)
def test_a_bad_deploy_value_is_one_line_naming_the_key(line: str, key: str, tmp_path: Path) -> None:
    config = tmp_path / "jobctl.toml"
    config.write_text(f'[jobs.sync]\nschedule = "0 6 * * *"\n\n[deploy]\n{line}\n')
    result = jobctl("--config", str(config), "deploy", "k8s", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"{key}:" in result.stderr


def test_unknown_target_and_both_options(tmp_path: Path) -> None:
    assert jobctl("--config", str(EXAMPLE), "deploy", "nomad", cwd=tmp_path).returncode == 2
    both = jobctl(
        "--config", str(EXAMPLE), "deploy", "cron", "--out", "a", "--check", "b", cwd=tmp_path
    )
    assert both.returncode == 2


# --------------------------------------------------------------------------- DST

# Jobs in the hours Toronto's DST changes touch: 02:30 does not exist on Sunday
# 2026-03-08, 01:30 happens twice on Sunday 2026-11-01; 06:00 is on neither.
DST_JOBS = {"skipped": "30 2 * * *", "doubled": "30 1 * * *", "plain": "0 6 * * *"}
DST_DAYS = [
    (datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 9, 12, tzinfo=UTC)),
    (datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC)),
]


def dst_config(tmp_path: Path) -> Path:
    config = tmp_path / "jobctl.toml"
    config.write_text(
        "".join(
            f'[jobs.{name}]\nschedule = "{expr}"\ntimezone = "America/Toronto"\n\n'
            for name, expr in DST_JOBS.items()
        )
    )
    return config


def generate(tmp_path: Path, target: str) -> Path:
    """The DST jobs' files for ``target``, written by ``jobctl deploy --out``."""
    out = tmp_path / target
    result = jobctl(
        "--config", str(dst_config(tmp_path)), "deploy", target, "--out", str(out), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return out


def local(fires: list[datetime]) -> list[str]:
    return [f.astimezone(TORONTO).strftime("%m-%d %H:%M %Z") for f in fires]


def expected(name: str, flavour: str) -> list[str]:
    """README: systemd skips a nonexistent time and fires a repeated one once; the
    generated crontab (UTC host + guard) and a CronJob skip it and fire twice."""
    days = {
        "skipped": ["03-09 02:30 EDT", "11-01 02:30 EST", "11-02 02:30 EST"],
        "doubled": [
            "03-08 01:30 EST",
            "03-09 01:30 EDT",
            "11-01 01:30 EDT",
            "11-01 01:30 EST",
            "11-02 01:30 EST",
        ],
        "plain": ["03-08 06:00 EDT", "03-09 06:00 EDT", "11-01 06:00 EST", "11-02 06:00 EST"],
    }[name]
    if flavour == "systemd" and name == "doubled":
        days.remove("11-01 01:30 EST")
    return days


def in_windows(fires: list[datetime]) -> list[datetime]:
    return [f for f in fires if any(a < f <= b for a, b in DST_DAYS)]


def systemd_fires(calendar: str) -> list[datetime]:
    fires = []
    for start, _ in DST_DAYS:
        out = subprocess.run(
            [
                "systemd-analyze",
                "calendar",
                f"--base-time={start:%Y-%m-%d %H:%M:%S} UTC",
                "--iterations=4",
                calendar,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=True,
        ).stdout
        found = re.findall(
            r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out
        )
        fires += [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]
    return in_windows(fires)


@pytest.mark.parametrize("name", list(DST_JOBS))
def test_dst_systemd(name: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    out = tmp_path / "units"
    assert (
        jobctl(
            "--config",
            str(dst_config(tmp_path)),
            "deploy",
            "systemd",
            "--out",
            str(out),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    timer = (out / f"jobctl-{name}.timer").read_text()
    calendar = re.search(r"^OnCalendar=(.*)$", timer, re.M).group(1)  # type: ignore[union-attr]
    fires = systemd_fires(calendar)
    assert local(fires) == expected(name, "systemd")
    # jobctl's slots agree with what the timer does.
    assert fires == in_windows(
        list(
            Schedule(DST_JOBS[name], TORONTO, "systemd").fire_times(DST_DAYS[0][0], DST_DAYS[1][1])
        )
    )


@pytest.mark.parametrize("name", list(DST_JOBS))
def test_dst_cron(name: str, tmp_path: Path) -> None:
    """Fire the generated line as Debian cron does on a UTC host (cronsim), with the
    guard evaluated by /bin/sh against a `date` pinned to the tick."""
    out = generate(tmp_path, "cron")
    (line,) = [
        text
        for text in (out / "crontab.example").read_text().splitlines()
        if f"logger -t jobctl-{name} " in text
    ]
    fields = line.split(None, 6)
    schedule, command = " ".join(fields[:5]), fields[6].replace("\\%", "%")
    guard = command.split(" && jobctl ")[0] if " && jobctl " in command else "true"
    real_date = shutil.which("date")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "date").write_text(f'#!/bin/sh\nexec {real_date} -d "@$FAKE_NOW" "$@"\n')
    (bin_dir / "date").chmod(0o755)
    fires = []
    for start, end in DST_DAYS:
        for tick in CronSim(schedule, start):
            if tick > end:
                break
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_NOW": str(int(tick.timestamp()))}
            if subprocess.run(["/bin/sh", "-c", guard], env=env, check=False).returncode == 0:
                fires.append(tick)
    assert local(fires) == expected(name, "cron")
    assert fires == in_windows(
        list(Schedule(DST_JOBS[name], TORONTO, "k8s").fire_times(DST_DAYS[0][0], DST_DAYS[1][1]))
    )


@pytest.mark.parametrize("name", list(DST_JOBS))
def test_dst_k8s(name: str, tmp_path: Path) -> None:
    """No controller runs here: the CronJob carries the job's own schedule and zone, and
    jobctl's ``k8s`` flavour models the controller (robfig/cron, see jobctl.schedule)."""
    yaml: Any = pytest.importorskip("yaml")
    out = generate(tmp_path, "k8s")
    spec = yaml.safe_load((out / f"jobctl-{name}.yaml").read_text())["spec"]
    assert (spec["schedule"], spec["timeZone"]) == (DST_JOBS[name], "America/Toronto")
    fires = in_windows(
        list(
            Schedule(spec["schedule"], ZoneInfo(spec["timeZone"]), "k8s").fire_times(
                DST_DAYS[0][0], DST_DAYS[1][1]
            )
        )
    )
    assert local(fires) == expected(name, "k8s")
