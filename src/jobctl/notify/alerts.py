"""What a failing job's alerts say, when they are sent, and to which channels.

Per job (state in ``jobctl.alert_state``, see :mod:`jobctl.db.alert_state`):

* a run ends ``failed`` (after its retries) or is found ``abandoned``: the streak of
  consecutive failures grows by one, then
  - the first failure of a streak sends a **failure** alert to the job's channels;
  - the ``escalate_after``-th sends an **escalation** (to ``escalation_channels``,
    default the job's own) instead;
  - any other failure sends nothing, unless the last alert is ``repeat_after`` old:
    then one reminder (of the failure, or of the escalation once escalated);
* a run ends ``completed``: the streak ends, and if an alert was sent about it, one
  **recovered** message goes to the channels that were told.

Skipped and cancelled runs and dry runs change nothing. Sending is claimed in the
database before it is tried (a guarded update), so two hosts never both send it,
and a delivery failure is logged and returned (the runner records it on the run's
``stats["alerts"]``): it never changes the run's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobctl.config import Settings
from jobctl.config_models import AlertsConfig, EmailChannel, FileChannel
from jobctl.db import alert_state, ledger
from jobctl.db.alert_state import Streak
from jobctl.db.engine import Database
from jobctl.durations import format_duration
from jobctl.notify import DeliveryFailed

log = logging.getLogger("jobctl.alerts")

Clean = Callable[[str], str]

FAILURE = "failure"
REMINDER = "reminder"
ESCALATION = "escalation"
ESCALATION_REMINDER = "escalation_reminder"
RECOVERED = "recovered"
_ESCALATED = (ESCALATION, ESCALATION_REMINDER)


@dataclass(frozen=True)
class Alert:
    kind: str
    job: str
    run_id: int
    subject: str
    body: str
    severity: str
    channels: tuple[str, ...]


def job_channels(settings: Settings, job: str) -> tuple[str, ...]:
    """The channels a job's alerts go to: its own list, else ``[alerts] default``."""
    own = settings.job(job).alerts
    return own if own is not None else settings.alerts.default


def escalation_channels(settings: Settings, job: str) -> tuple[str, ...]:
    chosen = settings.alerts.escalation_channels
    return chosen if chosen is not None else job_channels(settings, job)


def decide(streak: Streak, config: AlertsConfig) -> str | None:
    """The alert this state of the streak calls for (None: nothing to send now)."""
    due = streak.last_alert_at is None or (streak.now - streak.last_alert_at >= config.repeat_after)
    if streak.failures >= config.escalate_after:
        if streak.last_alert_kind not in _ESCALATED:
            return ESCALATION
        return ESCALATION_REMINDER if due else None
    if streak.last_alert_kind is None:
        return FAILURE
    return REMINDER if due else None


# --------------------------------------------------------------------------- messages

_SUBJECTS = {
    FAILURE: "[jobctl] FAILED: {job} (run {run})",
    REMINDER: "[jobctl] STILL FAILING: {job}, {n} failures in a row (run {run})",
    ESCALATION: "[jobctl] ESCALATION: {job} failed {n} times in a row (run {run})",
    ESCALATION_REMINDER: "[jobctl] ESCALATION, STILL FAILING: {job}, {n} failures in a row"
    " (run {run})",
    RECOVERED: "[jobctl] RECOVERED: {job} (run {run}) after {n} failure{s}",
}
_SEVERITY = {
    FAILURE: "error",
    REMINDER: "error",
    ESCALATION: "critical",
    ESCALATION_REMINDER: "critical",
    RECOVERED: "ok",
}


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if isinstance(moment, datetime) else "-"


def _records(run: Mapping[str, Any]) -> int:
    stats = run.get("stats") or {}
    before = stats.get("records_before_failure") if isinstance(stats, dict) else None
    return int(before) if isinstance(before, int) else int(run.get("records_total") or 0)


def compose(kind: str, run: Mapping[str, Any], streak: Streak, clean: Clean) -> tuple[str, str]:
    """The subject and the plain-text body of an alert about ``run``."""
    n = streak.failures
    subject = _SUBJECTS[kind].format(job=run["job"], run=run["id"], n=n, s="" if n == 1 else "s")
    ms = run.get("duration_ms")
    duration = format_duration(timedelta(milliseconds=ms)) if ms is not None else "-"
    lines = [
        f"job:       {run['job']}",
        f"run:       {run['id']}",
        f"status:    {run['status']}",
        f"severity:  {_SEVERITY[kind]}",
    ]
    if kind != RECOVERED:
        lines.append(f"error:     {run.get('error_message') or '-'}")
    lines += [
        f"started:   {_when(run.get('started_at'))}",
        f"duration:  {duration}",
        f"records:   {_records(run)}"
        + (" processed before the failure" if kind != RECOVERED else " processed"),
        f"host:      {run.get('host')} (pid {run.get('pid')})",
        f"trigger:   {run.get('trigger')}",
    ]
    if run.get("partition"):
        lines.append(f"partition: {run['partition']}")
    if kind == RECOVERED:
        lines.append(f"streak:    {n} failed run(s) since {_when(streak.first_failed_at)}")
    elif n > 1:
        lines.append(f"streak:    {n} failures in a row since {_when(streak.first_failed_at)}")
    lines += ["", f"inspect:   jobctl runs show {run['id']}"]
    return clean(subject), clean("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- delivery


def _send_one(settings: Settings, alert: Alert, name: str, clean: Clean) -> str:
    channel = settings.channels[name]
    if isinstance(channel, EmailChannel):
        from jobctl.notify import email

        headers = {
            "X-Jobctl-Alert": alert.kind,
            "X-Jobctl-Severity": alert.severity,
            "X-Jobctl-Run": str(alert.run_id),
        }
        email.send(channel, alert.subject, alert.body, clean, headers)
        return "sent"
    if isinstance(channel, FileChannel):
        from jobctl.notify import file

        file.send(settings.base_dir / channel.path, alert.subject, alert.body, clean)
        return "sent"
    from jobctl.notify import webhook

    webhook.send(channel, alert.subject, alert.body, clean)
    return "sent"


def deliver(settings: Settings, alert: Alert, clean: Clean) -> dict[str, Any]:
    """Send ``alert`` to each of its channels; what happened, for ``stats["alerts"]``."""
    results: dict[str, str] = {}
    for name in alert.channels:
        try:
            results[name] = _send_one(settings, alert, name, clean)
        except DeliveryFailed as exc:
            results[name] = f"failed: {exc}"
        except Exception as exc:  # a channel's bug must not stop the others, nor the run
            results[name] = clean(f"failed: {type(exc).__name__}: {exc}")
        if results[name] == "sent":
            log.info(
                "%s: %s alert for run %s sent to %s",
                alert.job,
                alert.kind,
                alert.run_id,
                name,
                extra={"action": "alert.sent", "run_id": alert.run_id, "job": alert.job},
            )
        else:
            log.warning(
                "%s: %s alert for run %s to %s %s",
                alert.job,
                alert.kind,
                alert.run_id,
                name,
                results[name],
                extra={"action": "alert.failed", "run_id": alert.run_id, "job": alert.job},
            )
    return {"kind": alert.kind, "severity": alert.severity, "channels": results}


def on_failure(
    settings: Settings, db: Database, clean: Clean, job: str, run_id: int
) -> dict[str, Any] | None:
    """A run of ``job`` ended failed or abandoned: count it, and send what is due."""
    channels = job_channels(settings, job)
    if not channels and not escalation_channels(settings, job):
        return None
    with db.begin() as conn:
        streak = alert_state.count_failure(conn, job, run_id)
        if streak is None:
            return None  # counted already
        kind = decide(streak, settings.alerts)
        if kind is None:
            return {"kind": None, "streak": streak.failures, "note": _quiet(streak, settings)}
        if not alert_state.claim(conn, streak, kind, run_id):
            return {"kind": None, "streak": streak.failures, "note": "sent by another process"}
        run = ledger.get_run(conn, run_id)
    if run is None:
        return None
    targets = escalation_channels(settings, job) if kind in _ESCALATED else channels
    subject, body = compose(kind, run, streak, clean)
    alert = Alert(kind, job, run_id, subject, body, _SEVERITY[kind], targets)
    result = {**deliver(settings, alert, clean), "streak": streak.failures}
    if targets and all(v != "sent" for v in result["channels"].values()):
        # Reached nobody: give the claim back, so the next failure sends it again
        # rather than a reminder a day later (or never).
        with db.begin() as conn:
            if alert_state.release(conn, streak, kind, run_id):
                result["note"] = "not delivered: the next failure sends it again"
    return result


def _quiet(streak: Streak, settings: Settings) -> str:
    last = streak.last_alert_at
    if last is None:
        return "no alert due"
    left = settings.alerts.repeat_after - (streak.now - last)
    return f"{streak.last_alert_kind} sent {_when(last)}; next reminder in {format_duration(left)}"


def on_success(
    settings: Settings, db: Database, clean: Clean, job: str, run_id: int
) -> dict[str, Any] | None:
    """A run of ``job`` completed: end its streak, and say so if an alert was sent."""
    channels = job_channels(settings, job)
    if not channels and not escalation_channels(settings, job):
        return None
    with db.begin() as conn:
        ended = alert_state.end_streak(conn, job)
        if ended is None or ended.last_alert_kind is None:
            return None
        run = ledger.get_run(conn, run_id)
    if run is None:
        return None
    told = channels
    if ended.last_alert_kind in _ESCALATED:
        told = tuple(dict.fromkeys([*channels, *escalation_channels(settings, job)]))
    subject, body = compose(RECOVERED, run, ended, clean)
    alert = Alert(RECOVERED, job, run_id, subject, body, _SEVERITY[RECOVERED], told)
    return {**deliver(settings, alert, clean), "streak": ended.failures}


def after_sweep(settings: Settings, db: Database, clean: Clean, run_ids: Iterable[int]) -> None:
    """Runs just marked ``abandoned`` by a sweep: alert for each, recorded on the run."""
    for run_id in run_ids:
        with db.begin() as conn:
            run = ledger.get_run(conn, run_id)
        if run is None or run.get("dry_run"):
            continue
        result = on_failure(settings, db, clean, str(run["job"]), run_id)
        if result is not None:
            with db.begin() as conn:
                ledger.note_stats(conn, run_id, {"alerts": result})
