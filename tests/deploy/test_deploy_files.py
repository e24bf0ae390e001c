"""The deployment artefacts in deploy/ pass the real validators and agree with each other.

- systemd: ``systemd-analyze verify`` in a temporary root (any stderr output fails),
  ``systemd-analyze calendar`` for every timer, ``systemd-analyze security --offline``,
  ``systemd-sysusers`` for the jobctl user;
- cron: Debian's ``crontab -n``, then every line is fired through /bin/sh at the times
  Debian cron would fire it (cronsim, host clock in UTC) with a ``date`` pinned to that
  instant, and the resulting jobctl runs must be exactly the job's schedule;
- Kubernetes: ``kubernetes-validate`` (strict, oldest version with ``timeZone`` GA and
  the latest), plus what it does not check (enums, image, schedule, restart policy).

These files are generated from examples/jobctl.toml (test_deploy_command.py proves that
they are what ``jobctl deploy`` writes). ``JOBS`` below restates each job's cron
expression and zone (as in that config) and its systemd calendar independently: every
artefact is compared with it, and the systemd calendar with cronsim.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEMD_DIR = DEPLOY / "systemd"
CRONTAB = DEPLOY / "crontab.example"
K8S_DIR = DEPLOY / "k8s"

JOBCTL = "/usr/local/bin/jobctl"
ENV_FILE = "/etc/jobctl/jobctl.env"
CONFIG = "/etc/jobctl/jobctl.toml"
USER = "jobctl"
ALERT_TEMPLATE = "jobctl-alert@.service"


@dataclass(frozen=True)
class Job:
    name: str  # the job's name in jobctl.toml
    argv: tuple[str, ...]  # jobctl's arguments, before --trigger
    cron: str  # the schedule as in jobctl.toml and the CronJob
    zone: str  # its zone (jobctl.toml / CronJob timeZone)
    calendar: str  # systemd OnCalendar=
    takes_trigger: bool = True  # `schedule run-due` is not a job: no --trigger

    @property
    def unit(self) -> str:
        """Units jobctl-SLUG.service/.timer, CronJob jobctl-SLUG, cron tag jobctl-SLUG."""
        return f"jobctl-{self.name.replace('_', '-')}"


TZ_TORONTO = "America/Toronto"
JOBS = [
    Job("sync", ("sync",), "0 6 * * 1-5", TZ_TORONTO, f"Mon..Fri *-*-* 06:00:00 {TZ_TORONTO}"),
    Job("snapshot", ("snapshot",), "0 2 * * *", "UTC", "*-*-* 02:00:00 UTC"),
    Job("cleanup", ("cleanup",), "0 3 * * 0", TZ_TORONTO, f"Sun *-*-* 03:00:00 {TZ_TORONTO}"),
    Job("report", ("report",), "0 8 * * 1", TZ_TORONTO, f"Mon *-*-* 08:00:00 {TZ_TORONTO}"),
    Job(
        "table_sizes",
        ("run", "table_sizes"),
        "0 7 * * 1",
        TZ_TORONTO,
        f"Mon *-*-* 07:00:00 {TZ_TORONTO}",
    ),
    Job(
        "schedule-worker",
        ("schedule", "run-due"),
        "* * * * *",
        "UTC",
        "*-*-* *:*:00 UTC",
        takes_trigger=False,
    ),
]
BY_NAME = {job.name: job for job in JOBS}
JOB_IDS = [job.name for job in JOBS]

# Windows around both 2026 DST changes in Toronto (Sun 8 March, Sun 1 November), which
# are also the days cleanup runs. Starting at :30 seconds keeps every tool's "next fire
# time after" unambiguous.
WINDOWS = [
    (datetime(2026, 2, 26, 0, 0, 30, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)),
    (datetime(2026, 10, 22, 0, 0, 30, tzinfo=UTC), datetime(2026, 11, 13, tzinfo=UTC)),
]
WORKER_WINDOW = (
    datetime(2026, 3, 8, 6, 55, 30, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 5, tzinfo=UTC),
)


def windows(job: Job) -> list[tuple[datetime, datetime]]:
    return [WORKER_WINDOW] if job.cron == "* * * * *" else WINDOWS


def expected_fires(job: Job, start: datetime, end: datetime) -> list[datetime]:
    """The job's fire times in (start, end], UTC, from its cron expression in its zone."""
    fires = []
    for t in CronSim(job.cron, start.astimezone(ZoneInfo(job.zone))):
        if t > end:
            break
        fires.append(t.astimezone(UTC))
    return fires


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, **kw)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


# --------------------------------------------------------------------------- systemd


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd keys can repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: keep settings on one line: {raw!r}"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        assert section is not None, f"{path.name}: setting outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        sections[section][key.strip()].append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times: {values}"
    return values[0]


def unit_files() -> list[Path]:
    return sorted(p for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".timer"))


def systemd_analyze() -> str:
    return tool("systemd-analyze")


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with systemd's own units, ours in /etc, and a stub for every ExecStart binary."""
    systemd_analyze()
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for path in unit_files():
        shutil.copy(path, etc / path.name)
        for command in parse_unit(path)["Service"]["ExecStart"]:
            binary = command.lstrip("-@:+!").split()[0]
            assert binary.startswith("/"), f"{path.name}: ExecStart= needs an absolute path"
            stub = root / binary.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def verify(root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    return run([systemd_analyze(), "verify", f"--root={root}", *units])


def test_one_service_and_timer_per_job_plus_the_alert_template() -> None:
    names = {p.name for p in unit_files()}
    expected = {f"{job.unit}.{kind}" for job in JOBS for kind in ("service", "timer")}
    assert names == expected | {ALERT_TEMPLATE}


def test_systemd_verify_is_clean(systemd_root: Path) -> None:
    units = [p.name for p in unit_files()]
    result = verify(systemd_root, units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_verify_harness_sees_warnings(systemd_root: Path, tmp_path: Path) -> None:
    """Control: a misspelt key only warns (exit 0), and the test above would catch it."""
    root = tmp_path / "root"
    shutil.copytree(systemd_root, root, symlinks=True)
    unit = root / "etc/systemd/system/jobctl-sync.service"
    unit.write_text(unit.read_text().replace("TimeoutStopSec=", "TimeoutStpSec="))
    result = verify(root, ["jobctl-sync.service"])
    assert "TimeoutStpSec" in result.stderr


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_service_settings(job: Job) -> None:
    unit = parse_unit(SYSTEMD_DIR / f"{job.unit}.service")
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "oneshot"
    trigger = " --trigger timer" if job.takes_trigger else ""
    assert service["ExecStart"] == [f"{JOBCTL} {' '.join(job.argv)}{trigger}"]
    # 75: another run holds the lock, a skipped tick is not a failure.
    assert "75" in one(unit, "Service", "SuccessExitStatus").split()
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert 10 <= parse_seconds(one(unit, "Service", "TimeoutStopSec")) <= 300
    assert one(unit, "Service", "EnvironmentFile") == f"-{ENV_FILE}"
    assert f"JOBCTL_CONFIG={CONFIG}" in service["Environment"]
    assert one(unit, "Service", "User") == USER
    assert one(unit, "Service", "StateDirectory") == "jobctl"
    assert one(unit, "Unit", "OnFailure") == f"jobctl-alert@{job.name}.service"
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }
    assert {key: service[key] for key in hardening} == {k: [v] for k, v in hardening.items()}


def test_alert_template_runs_something_simple() -> None:
    unit = parse_unit(SYSTEMD_DIR / ALERT_TEMPLATE)
    assert one(unit, "Service", "Type") == "oneshot"
    commands = unit["Service"]["ExecStart"]
    assert commands and any("%i" in c for c in commands)  # names the failed unit
    assert "OnFailure" not in unit["Unit"]  # no alert loop


def test_on_failure_and_timer_targets_exist() -> None:
    """systemd-analyze verify does not check these: a typo would silently alert nobody."""
    targets = []
    for path in unit_files():
        unit = parse_unit(path)
        for value in unit["Unit"].get("OnFailure", []):
            targets += value.split()
        targets += unit["Timer"].get("Unit", [])
    assert len(targets) == 2 * len(JOBS)
    for target in targets:
        name = re.sub(r"@[^.]*\.", "@.", target)  # an instance -> its template file
        assert (SYSTEMD_DIR / name).is_file(), f"{target} names a unit that is not shipped"


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_timer_settings(job: Job) -> None:
    unit = parse_unit(SYSTEMD_DIR / f"{job.unit}.timer")
    assert one(unit, "Timer", "OnCalendar") == job.calendar
    assert one(unit, "Timer", "Unit") == f"{job.unit}.service"
    assert one(unit, "Timer", "Persistent") == "true"
    # The every-minute worker must stay within its minute; the rest spread over minutes.
    if job.cron == "* * * * *":
        assert "RandomizedDelaySec" not in unit["Timer"]
    else:
        assert 30 <= parse_seconds(one(unit, "Timer", "RandomizedDelaySec")) <= 300
    assert parse_seconds(one(unit, "Timer", "AccuracySec")) <= 60
    assert one(unit, "Install", "WantedBy") == "timers.target"


def parse_seconds(value: str) -> float:
    """A systemd time span such as ``300``, ``90s``, ``1min``, ``2min 30s``, ``1h``."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    return sum(float(n) * units[u] for n, u in parts)


def systemd_elapses(calendar: str, base: datetime, iterations: int) -> list[datetime]:
    result = run(
        [
            systemd_analyze(),
            "calendar",
            f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
            f"--iterations={iterations}",
            calendar,
        ],
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    found = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", result.stdout
    )
    assert len(found) == iterations, result.stdout
    return [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_timer_calendar_matches_the_cron_schedule(job: Job) -> None:
    systemd_analyze()
    calendar = one(parse_unit(SYSTEMD_DIR / f"{job.unit}.timer"), "Timer", "OnCalendar")
    for start, end in windows(job):
        expected = expected_fires(job, start, end)
        assert len(expected) >= 3
        assert systemd_elapses(calendar, start, len(expected)) == expected


def test_sync_timer_fires_at_0600_toronto_on_weekdays() -> None:
    systemd_analyze()
    calendar = one(parse_unit(SYSTEMD_DIR / "jobctl-sync.timer"), "Timer", "OnCalendar")
    fires = systemd_elapses(calendar, datetime(2026, 3, 5, 12, tzinfo=UTC), 10)
    # EST (UTC-5) until Sunday 8 March, EDT (UTC-4) after.
    assert fires[:3] == [
        datetime(2026, 3, 6, 11, tzinfo=UTC),
        datetime(2026, 3, 9, 10, tzinfo=UTC),
        datetime(2026, 3, 10, 10, tzinfo=UTC),
    ]
    for fire in fires:
        local = fire.astimezone(ZoneInfo(TZ_TORONTO))
        assert (local.hour, local.minute, local.second) == (6, 0, 0)
        assert local.weekday() < 5


def test_systemd_security_exposure(systemd_root: Path) -> None:
    threshold = 2.0
    services = [f"{job.unit}.service" for job in JOBS]
    services.append("jobctl-alert@sync.service")
    for service in services:
        result = run(
            [
                systemd_analyze(),
                "security",
                "--offline=true",
                f"--root={systemd_root}",
                f"--threshold={round(threshold * 10)}",
                "--no-pager",
                service,
            ]
        )
        assert result.returncode == 0, f"{service}: {result.stdout[-2000:]}{result.stderr}"
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
        assert match, result.stdout
        assert float(match.group(1)) <= threshold


def test_sysusers_creates_the_user_the_units_run_as(tmp_path: Path) -> None:
    sysusers = tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = run([sysusers, f"--root={tmp_path}", str(SYSTEMD_DIR / "jobctl.sysusers")])
    assert result.returncode == 0, result.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    assert USER in passwd
    assert passwd[USER][5:7] == ["/var/lib/jobctl", "/usr/sbin/nologin"]
    assert int(passwd[USER][2]) < 1000  # a system user


# --------------------------------------------------------------------------- cron

_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


@dataclass(frozen=True)
class CronLine:
    schedule: str
    user: str
    command: str


def parse_cron_d(text: str) -> tuple[dict[str, str], list[CronLine]]:
    """An /etc/cron.d file: environment assignments and `m h dom mon dow user command`."""
    env: dict[str, str] = {}
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if m := _ENV_LINE.match(raw):
            env[m.group(1)] = m.group(2).strip().strip("\"'")
            continue
        fields = raw.split(None, 6)
        assert len(fields) == 7, f"not 'm h dom mon dow user command': {raw!r}"
        lines.append(CronLine(" ".join(fields[:5]), fields[5], fields[6]))
    return env, lines


def cron_file() -> tuple[dict[str, str], list[CronLine]]:
    return parse_cron_d(CRONTAB.read_text())


def line_for(job: Job) -> CronLine:
    matches = [
        line for line in cron_file()[1] if re.search(rf"\blogger -t {job.unit}\b", line.command)
    ]
    assert len(matches) == 1, f"want one crontab line logging as {job.unit}"
    return matches[0]


def shell_command(line: CronLine) -> str:
    """What cron hands to the shell: `\\%` becomes `%`; a bare `%` would start stdin."""
    assert not re.search(r"(?<!\\)%", line.command), "unescaped % in a crontab command"
    return line.command.replace("\\%", "%")


def test_crontab_passes_debian_crontab_check() -> None:
    crontab = tool("crontab")
    result = run([crontab, "-n", str(CRONTAB)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_crontab_check_rejects_a_bad_line(tmp_path: Path) -> None:
    """Control: `crontab -n` really parses the file (and so would catch a broken line)."""
    crontab = tool("crontab")
    bad = tmp_path / "jobctl"
    bad.write_text(CRONTAB.read_text().replace("0 2 * * *", "0 24 * * *"))
    assert bad.read_text() != CRONTAB.read_text()
    assert run([crontab, "-n", str(bad)]).returncode != 0


def test_crontab_file_basics() -> None:
    text = CRONTAB.read_text()
    assert text.endswith("\n")  # cron ignores an unterminated last line
    env, lines = cron_file()
    assert env["SHELL"] == "/bin/sh"
    assert "/usr/local/bin" in env["PATH"].split(":")
    assert env["JOBCTL_CONFIG"] == CONFIG
    assert "CRON_TZ" not in env  # Debian cron ignores it: the file converts zones itself
    assert len(lines) == len(JOBS)


def test_crontab_user_column() -> None:
    """crontab -n cannot tell a user column from a command: check it here."""
    lines = cron_file()[1]
    assert {line.user for line in lines} == {USER}
    for line in lines:
        assert line.command.split()[0] in ("[", "jobctl"), line.command


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_crontab_line_runs_jobctl_with_the_right_arguments(job: Job) -> None:
    command = shell_command(line_for(job))
    trigger = " --trigger cron" if job.takes_trigger else ""
    invocation = f"jobctl --env-file {ENV_FILE} {' '.join(job.argv)}{trigger} 2>&1 |"
    assert invocation in command
    if job.takes_trigger:
        assert command.count("--trigger cron") == 1


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`date` pinned to $FAKE_NOW (zone rules still real), recording jobctl and logger."""
    real_date = tool("date")
    bin_dir = tmp_path_factory.mktemp("bin")
    stubs = {
        "date": f'exec {real_date} -d "@$FAKE_NOW" "$@"\n',
        "jobctl": 'printf "%s\\n" "$*" >> "$CALLS"\necho "jobctl ran"\n',
        "logger": 'printf "logger %s: %s\\n" "$*" "$(cat)" >> "$CALLS"\n',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_crontab_line_fires_on_the_job_schedule(job: Job, fake_bin: Path, tmp_path: Path) -> None:
    """Fire the line as Debian cron would on a UTC host; jobctl must run exactly on schedule."""
    env, _ = cron_file()
    line = line_for(job)
    command = shell_command(line)
    calls = tmp_path / "calls"
    for start, end in windows(job):
        ran = []
        for tick in CronSim(line.schedule, start):
            if tick > end:
                break
            calls.write_text("")
            result = run(
                [env["SHELL"], "-c", command],
                env={
                    **env,
                    "PATH": f"{fake_bin}:{env['PATH']}",
                    "FAKE_NOW": str(int(tick.timestamp())),
                    "CALLS": str(calls),
                    "HOME": str(tmp_path),
                    "LOGNAME": line.user,
                },
            )
            assert result.stdout == result.stderr == "", (tick, result)
            recorded = calls.read_text().splitlines()
            if recorded:
                argv = recorded[0]
                assert argv.endswith(" ".join(job.argv) + (" --trigger cron" * job.takes_trigger))
                assert recorded[1:] == [f"logger -t {job.unit} -p cron.info: jobctl ran"]
                ran.append(tick)
        assert ran == expected_fires(job, start, end)


# --------------------------------------------------------------------------- Kubernetes


def k8s_documents() -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    docs = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(loaded) == 1, f"{path.name}: one resource per file"
        docs[path.name] = loaded[0]
    return docs


def cronjob(job: Job) -> dict[str, Any]:
    return k8s_documents()[f"{job.unit}.yaml"]


def test_k8s_files_are_one_cronjob_per_job_and_the_config() -> None:
    kinds = {name: doc["kind"] for name, doc in k8s_documents().items()}
    expected = {f"{job.unit}.yaml": "CronJob" for job in JOBS}
    assert kinds == {**expected, "configmap.yaml": "ConfigMap"}


@pytest.mark.parametrize("version", ["1.27", "latest"])
def test_k8s_kubernetes_validate_strict(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version() if version == "latest" else version
    for name, doc in k8s_documents().items():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name} (Kubernetes {version}): {exc.message}")


def test_k8s_validator_rejects_a_misspelt_field() -> None:
    """Control: a `timezone` (lower-case z) would be caught by the test above."""
    kv = pytest.importorskip("kubernetes_validate")
    doc = cronjob(BY_NAME["sync"])
    doc["spec"]["timezone"] = doc["spec"].pop("timeZone")
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


def min_interval(cron: str, zone: str) -> timedelta:
    it: Iterator[datetime] = CronSim(cron, datetime(2026, 1, 1, tzinfo=ZoneInfo(zone)))
    fires = [next(it) for _ in range(50)]
    return min(b - a for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize("job", JOBS, ids=JOB_IDS)
def test_k8s_cronjob(job: Job) -> None:
    doc = cronjob(job)
    assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "CronJob")
    assert doc["metadata"]["name"] == job.unit
    spec = doc["spec"]
    assert spec["schedule"] == job.cron
    CronSim(spec["schedule"], datetime(2026, 1, 1, tzinfo=UTC))  # parses
    assert spec["timeZone"] == job.zone
    ZoneInfo(spec["timeZone"])  # a real IANA zone
    assert spec["concurrencyPolicy"] == "Forbid"  # the schema does not check the enum
    deadline = spec["startingDeadlineSeconds"]
    assert 0 < deadline < min_interval(job.cron, job.zone).total_seconds()
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1

    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 0  # jobctl retries itself
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+:[\w.-]+", container["image"])
    args = [*job.argv, "--trigger", "cron"] if job.takes_trigger else list(job.argv)
    assert container["args"] == args
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"
    assert env["JOBCTL_CONFIG"]["value"] == CONFIG
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/jobctl"]]["configMap"]["name"] == "jobctl-config"


def test_k8s_config_is_the_example_config_and_loads_in_jobctl(tmp_path: Path) -> None:
    """The ConfigMap holds the very file the CronJobs were generated from."""
    from jobctl.config import load_settings

    text = k8s_documents()["configmap.yaml"]["data"]["jobctl.toml"]
    assert text == (REPO / "examples" / "jobctl.toml").read_text()
    config = tmp_path / "jobctl.toml"
    config.write_text(text)
    settings = load_settings(config_path=config, environ={"DATABASE_URL": "postgresql://u@h/db"})
    for job in JOBS:
        if job.takes_trigger:
            cfg = settings.jobs[job.name]
            assert (cfg.schedule, cfg.timezone) == (job.cron, job.zone)


def test_alert_template_marks_the_crash_in_the_ledger() -> None:
    """The OnFailure= hook runs jobctl's own command with what systemd tells it."""
    unit = parse_unit(SYSTEMD_DIR / ALERT_TEMPLATE)
    (command,) = unit["Service"]["ExecStart"]
    assert command.startswith(f"{JOBCTL} runs mark-crashed %i ")
    for option, variable in [
        ("--unit", "MONITOR_UNIT"),
        ("--result", "MONITOR_SERVICE_RESULT"),
        ("--exit-status", "MONITOR_EXIT_STATUS"),
    ]:
        assert f"{option} ${{{variable}}}" in command
