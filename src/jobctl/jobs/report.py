"""``jobctl report``: a summary of a week, for the team or for every recipient.

::

    [report]
    title = "Cellar weekly"
    channels = ["team-mail"]            # [alerts.channels.NAME]: e-mail and / or webhook
    recipients = "SELECT id AS user_id, email, name FROM users WHERE weekly_mail"
    subject = "Your cellar, {{ period.label }}"
    templates = "report-templates"      # optional: report.{txt,md,html}.j2 of your own

    [[report.sections]]
    title = "Bottles in your cellar"
    sql = "SELECT wine, bottles FROM cellar WHERE user_id = :user_id ORDER BY wine"

The period is an ISO week in the report job's zone: by default the one before the
run's (a Monday tick reports the week that just ended), ``--date D`` the week holding
D. Section queries bind ``:period_start`` / ``:period_end`` (dates, half-open) and,
with a recipients query, that recipient's columns. Each runs read-only, bounded by
``query_timeout``.

Delivery goes to the configured channels; every delivery is recorded
(``jobctl.report_deliveries``) as soon as the server took it, so a retry or a second
run for the same week sends only what did not go (``--force`` sends all again). A
recipient whose mail fails is counted and named in ``stats``; the others still get
theirs; the run then fails (exit 1) so the failures are seen, and its retry sends to
those only. ``--no-send`` renders to stdout (or ``--output``) and sends nothing.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jobctl.config import Settings
from jobctl.config_models import (
    Channel,
    EmailChannel,
    FileChannel,
    ReportConfig,
    WebhookChannel,
)
from jobctl.durations import parse_date
from jobctl.errors import JobError, UsageError
from jobctl.jobspec import JobSpec, Planning, stored_params
from jobctl.periods import period_containing
from jobctl.sqltext import ParsedQuery, parse_query

if TYPE_CHECKING:  # the context brings SQLAlchemy, the renderer Jinja2: not for a skipped tick
    from jobctl.context import RunContext
    from jobctl.db.query import ReadOnlySession
    from jobctl.reports.model import Report, ReportPeriod, SectionTable
    from jobctl.reports.render import Renderer

FORMATS = ("text", "markdown", "html", "json")
_SUFFIX_FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
}
#: Failures named in ``stats`` at most (the counts are always whole).
FAILURES_KEPT = 50
#: A channel that fails this many messages in a row for reasons other than a refused
#: address (a server down, a refused login) is given up for the run: the remaining
#: recipients are counted as failed, not tried one retry loop each.
CHANNEL_GIVE_UP = 3
#: A webhook message is cut here (Slack takes about 40,000 characters).
WEBHOOK_TEXT_MAX = 35_000

#: One plain address (what a recipients row must hold): no spaces, commas, angle
#: brackets or line breaks, one ``@`` with something on both sides.
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")

#: Writes rendered text where the command shows it (stdout); jobs never print.
Sink = Callable[[str], None]


@dataclass(frozen=True)
class ReportArgs:
    """``jobctl report``'s own arguments."""

    on_date: str | None = None
    to: Sequence[str] = ()
    format: str | None = None
    output: str | None = None
    no_send: bool = False
    #: Where the rendered report goes when it goes to stdout (the CLI's).
    sink: Sink | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ReportPlan:
    #: The week's reference day (None: the week before the run's, or its slot's).
    on_date: date | None
    format: str
    send: bool
    to: tuple[str, ...] = ()
    output: Path | None = None
    sink: Sink | None = field(default=None, compare=False)
    templates: Path | None = None
    force: bool = False
    params: Mapping[str, str] = field(default_factory=dict, compare=False)


def _zone(settings: Settings) -> str:
    return settings.job("report").timezone


def week_before(day: date) -> tuple[date, date]:
    """The ISO week before the one holding ``day``: ``[monday, next monday)``."""
    period = period_containing("week", day - timedelta(days=7))
    return period.start, period.end


def _format(args: ReportArgs, report: ReportConfig) -> str:
    if args.format is not None:
        if args.format not in FORMATS:
            raise UsageError(f"--format {args.format!r} is not one of {', '.join(FORMATS)}")
        return args.format
    if args.output is not None:
        by_suffix = _SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
        if by_suffix is not None:
            return by_suffix
    return report.format


def _templates(settings: Settings) -> Path | None:
    if settings.report.templates is None:
        return None
    path = settings.base_dir / Path(settings.report.templates).expanduser()
    if not path.is_dir():
        raise UsageError(f"{settings.origin}: report.templates: {str(path)!r} is not a directory")
    return path


def _check_destinations(settings: Settings, args: ReportArgs, send: bool) -> None:
    channels = [settings.channels[n] for n in settings.report.channels]
    for address in args.to:
        if "@" not in address or any(c.isspace() for c in address):
            raise UsageError(f"--to {address!r} is not an e-mail address")
    if args.to and send and not any(isinstance(c, EmailChannel) for c in channels):
        raise UsageError(
            "--to needs an e-mail channel in [report] channels (its SMTP settings send it)"
        )
    if send and not channels and args.output is None and args.sink is None:
        raise UsageError(
            "the report has nowhere to go: list channels in [report] channels, "
            "or give --output FILE or --no-send"
        )


def plan(settings: Settings, args: ReportArgs, planning: Planning) -> ReportPlan:
    """Validate the command line and the templates (UsageError, exit 2, before any run row)."""
    zone = ZoneInfo(_zone(settings))
    on_date = parse_date(args.on_date, what="--date") if args.on_date is not None else None
    if on_date is not None:
        today = (planning.now or datetime.now(UTC)).astimezone(zone).date()
        start = period_containing("week", on_date).start
        if start > today:
            raise UsageError(
                f"--date {on_date}: its week starts {start}, after today ({today} in {zone.key})"
            )
    fmt = _format(args, settings.report)
    send = not args.no_send and not planning.dry_run
    _check_destinations(settings, args, send)
    templates = _templates(settings)
    from jobctl.reports.render import Renderer

    Renderer(templates).check(settings.report.subject)
    output = Path(args.output).expanduser() if args.output is not None else None
    if output is not None and not output.parent.is_dir():
        raise UsageError(f"--output {args.output!r}: directory {str(output.parent)!r} not found")
    return ReportPlan(
        on_date,
        fmt,
        send,
        tuple(dict.fromkeys(args.to)),
        output,
        args.sink,
        templates,
        planning.force,
        stored_params(
            date=args.on_date,
            to=list(args.to),
            format=args.format,
            output=str(output) if output is not None else None,
            no_send=args.no_send,
        ),
    )


# --------------------------------------------------------------------------- the run


def _period(ctx: RunContext, plan_: ReportPlan) -> ReportPeriod:
    from jobctl.reports.model import ReportPeriod

    zone = _zone(ctx.settings)
    if plan_.on_date is not None:
        week = period_containing("week", plan_.on_date)
        return ReportPeriod(week.start, week.end, zone)
    # A tick (or a catch-up) reports the week before its slot's; a manual run, before today's.
    today = ctx.slot_date or datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
    start, end = week_before(today)
    return ReportPeriod(start, end, zone)


def _recipients(
    session: ReadOnlySession, report: ReportConfig, period: ReportPeriod
) -> list[dict[str, Any]] | None:
    """The recipients' rows (None: no recipients query, one report for the channels)."""
    if report.recipients is None:
        return None
    parsed = parse_query(report.recipients)
    binds = {k: v for k, v in period.binds().items() if k in parsed.params}
    ((columns, rows),) = session.fetch([(parsed.text, binds, 10_000_000, "recipients query")])
    needed = {p for s in report.sections for p in parse_query(s.sql).params}
    missing = sorted(needed - set(columns) - set(period.binds()))
    if missing:
        raise JobError(
            f"the report sections bind :{missing[0]}, which the recipients query does not "
            f"return (its columns: {', '.join(columns) or 'none'})"
        )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _sections(
    session: ReadOnlySession,
    report: ReportConfig,
    period: ReportPeriod,
    recipient: Mapping[str, Any] | None,
) -> list[SectionTable]:
    """The sections of one report, read in one transaction (one snapshot of the data)."""
    from jobctl.reports.model import SectionTable

    values = {**(recipient or {}), **period.binds()}
    queries = []
    for section in report.sections:
        parsed = _parsed(section.sql)
        binds = {p: values[p] for p in parsed.params}
        queries.append((parsed.text, binds, section.max_rows + 1, f"section {section.title!r}"))
    return [
        SectionTable(
            section.title,
            columns,
            rows[: section.max_rows],
            section.description,
            truncated=len(rows) > section.max_rows,
        )
        for section, (columns, rows) in zip(
            report.sections, session.fetch(queries) if queries else [], strict=True
        )
    ]


@functools.lru_cache(maxsize=64)
def _parsed(query: str) -> ParsedQuery:
    return parse_query(query)


@dataclass
class _Tally:
    """What the run sent: the counts in ``stats``, the failures named."""

    sent: int = 0
    failed: int = 0
    already_sent: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def fail(self, channel: str, recipient: str, error: str) -> None:
        self.failed += 1
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append({"channel": channel, "to": recipient, "error": error})

    def stats(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "already_sent": self.already_sent,
            "failures": self.failures,
        }


class _Delivery:
    """The report's channels for one run: an SMTP session per e-mail channel, kept open
    across recipients; every delivery recorded as soon as the server took it."""

    def __init__(
        self, ctx: RunContext, plan_: ReportPlan, period: ReportPeriod, renderer: Renderer
    ) -> None:
        from jobctl.db import report_deliveries
        from jobctl.redact import Redactor

        self._redactor = Redactor(ctx.settings.secrets())
        self.ctx, self.plan, self.period, self.renderer = ctx, plan_, period, renderer
        self.channels = [ctx.settings.channels[n] for n in ctx.settings.report.channels]
        self.tally = _Tally()
        self.done: set[tuple[str, str]] = set()
        if plan_.send and not plan_.force:
            with ctx.transaction() as conn:
                self.done = report_deliveries.delivered(conn, period.start, period.end)
        self._mailers: dict[str, Any] = {}
        from jobctl.context import Session

        self._session = Session(ctx.db)
        self._given_up: dict[str, str] = {}
        self._in_a_row: dict[str, int] = {}

    def close(self) -> None:
        for mailer in self._mailers.values():
            mailer.close()
        self._session.close()

    def _record(self, channel: str, recipient: str) -> None:
        """Record one delivery in a transaction of its own, fenced like every one of the
        run's, on one connection kept for the run (a connection per mail would cost more
        than the mail)."""
        from jobctl.db import report_deliveries

        with self._session.transaction() as conn:
            report_deliveries.record(
                conn, self.period.start, self.period.end, [(channel, recipient)], self.ctx.run_id
            )

    def deliver(self, report: Report) -> None:
        for channel in self.channels:
            if isinstance(channel, EmailChannel):
                to = (report.address,) if report.address else self.plan.to or channel.to
                for address in to:
                    self._one(channel, address, report)
            else:  # a webhook, or a file: the recipient's address is only a label there
                self._one(channel, report.address or "", report)

    def _one(self, to: Channel, recipient: str, report: Report) -> None:
        from jobctl.notify import DeliveryFailed, RecipientRefused

        channel = to.name
        if (channel, recipient) in self.done:
            self.tally.already_sent += 1
            return
        if channel in self._given_up:
            self.tally.fail(channel, recipient, f"not sent: {self._given_up[channel]}")
            return
        if isinstance(to, EmailChannel) and not _ADDRESS.match(recipient):
            # from a recipients row: a header injection or a typo, never a mail
            self.tally.fail(channel, recipient, f"not an e-mail address: {recipient!r}")
            return
        self.ctx.check_lock()  # a mail is a side effect no transaction can take back
        try:
            if isinstance(to, EmailChannel):
                self._mail(to, report, recipient)
            elif isinstance(to, FileChannel):
                self._append(to, report, recipient)
            else:
                self._post(to, report)
        except DeliveryFailed as exc:
            self.ctx.log.error("report to %s via %s failed: %s", recipient or channel, channel, exc)
            self.tally.fail(channel, recipient, str(exc))
            if not isinstance(exc, RecipientRefused):
                self._in_a_row[channel] = self._in_a_row.get(channel, 0) + 1
                if self._in_a_row[channel] >= CHANNEL_GIVE_UP:
                    self._given_up[channel] = f"{CHANNEL_GIVE_UP} failures in a row: {exc}"
            return
        self._in_a_row[channel] = 0
        self._record(channel, recipient)
        self.done.add((channel, recipient))
        self.tally.sent += 1

    def _mail(self, channel: EmailChannel, report: Report, address: str) -> None:
        from jobctl.notify import email

        mailer = self._mailers.get(channel.name)
        if mailer is None:
            mailer = self._mailers[channel.name] = email.Mailer(channel, self._clean)
        subject = self.renderer.subject(self.ctx.settings.report.subject, report)
        mail = email.message(
            channel,
            subject,
            self.renderer.render("text", [report]),
            {"Auto-Submitted": "auto-generated", "X-Jobctl-Run-Id": str(self.ctx.run_id)},
            html=self.renderer.render("html", [report]),
            to=(address,),
        )
        mailer.send(mail)

    def _append(self, channel: FileChannel, report: Report, recipient: str) -> None:
        from jobctl.notify import file

        subject = self.renderer.subject(self.ctx.settings.report.subject, report)
        path = self.ctx.settings.base_dir / channel.path
        file.send(path, subject, self.renderer.render("text", [report]), self._clean, to=recipient)

    def _post(self, channel: WebhookChannel, report: Report) -> None:
        from jobctl.notify import webhook

        subject = self.renderer.subject(self.ctx.settings.report.subject, report)
        text = self.renderer.render("text", [report])
        if len(text) > WEBHOOK_TEXT_MAX:
            text = text[:WEBHOOK_TEXT_MAX] + "\n… (cut: the whole report is in the e-mail or file)"
        webhook.send(channel, subject, f"```\n{text}\n```", self._clean)

    def _clean(self, text: str) -> str:
        return self._redactor.text(text)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a reader sees
    the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(ctx: RunContext, plan_: ReportPlan) -> None:
    from jobctl.db.health import job_health
    from jobctl.db.query import ReadOnlySession
    from jobctl.reports.model import Report
    from jobctl.reports.render import Renderer

    config = ctx.settings.report
    period = _period(ctx, plan_)
    ctx.partition = period.start.isoformat()
    ctx.stats["period"] = {"start": period.start.isoformat(), "end": period.end.isoformat()}
    renderer = Renderer(plan_.templates)
    health = None
    if config.shows_job_health:
        start, end = period.bounds()
        with ctx.transaction() as conn:
            health = job_health(conn, start, end, also=ctx.settings.jobs)
    generated = datetime.now(UTC)
    collected: list[Report] = []
    sending = plan_.send and bool(config.channels)
    keep = plan_.output is not None or not sending
    delivery = _Delivery(ctx, plan_, period, renderer) if sending else None
    timeout = config.query_timeout.total_seconds()
    try:
        with ReadOnlySession(ctx.db, timezone=period.timezone, statement_timeout=timeout) as db:
            recipients = _recipients(db, config, period)
            if recipients is not None and plan_.to:
                recipients = [r for r in recipients if r.get(config.address_column) in plan_.to]
                if not recipients:
                    raise JobError(
                        f"no recipient of the recipients query has address "
                        f"{', '.join(plan_.to)} (column {config.address_column})"
                    )
            for recipient in recipients if recipients is not None else [None]:
                address = None
                if recipient is not None:
                    value = recipient.get(config.address_column)
                    address = str(value) if value else None
                report = Report(
                    config.title,
                    period,
                    generated,
                    _sections(db, config, period, recipient),
                    health,
                    recipient,
                    address,
                )
                ctx.counters.add({"total": 1})
                if delivery is not None:
                    if recipient is not None and address is None:
                        missing = f"recipient row without {config.address_column}"
                        delivery.tally.fail(", ".join(config.channels), "", missing)
                    else:
                        delivery.deliver(report)
                if keep:
                    collected.append(report)
    finally:
        if delivery is not None:
            delivery.close()
            ctx.stats.update(delivery.tally.stats())
            ctx.counters.add({"errors": delivery.tally.failed})
    ctx.stats["reports"] = ctx.counters.total
    if keep:
        text = renderer.render(plan_.format, collected)
        if plan_.output is not None:
            _write_atomically(plan_.output, text)
            ctx.stats["output"] = str(plan_.output)
            ctx.log.info("report written to %s (%s)", plan_.output, plan_.format)
        elif plan_.sink is not None:
            plan_.sink(text)
    if delivery is not None:
        tally = delivery.tally
        ctx.log.info("report %s: %d sent, %d failed", period.label, tally.sent, tally.failed)
        if tally.failed:
            first = tally.failures[0]
            raise JobError(
                f"{tally.failed} of {tally.sent + tally.failed} report deliveries failed "
                f"(first: {first['to'] or first['channel']}: {first['error']}); the others "
                "were sent, and a retry sends only the failed ones"
            )


def served_date(settings: Settings, slot: datetime) -> date:
    """A tick reports the ISO week before its slot's, in the report job's zone."""
    day = slot.astimezone(ZoneInfo(_zone(settings))).date()
    return week_before(day)[0]


SPEC = JobSpec(
    "report",
    run,
    plan,
    default_args=ReportArgs(),
    plan_type=ReportPlan,
    description="E-mail, post or write the weekly summary: job health and your own sections",
    builtin=True,
    date_based=True,
    served_date=served_date,
)
