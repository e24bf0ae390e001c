"""``jobctl sync``: read each configured source for a date and apply it to its table.

fetch (HTTP download or local file) → recognise an unchanged feed (HTTP
validators, or the same content digest and settings as the last sync) → stream
records → select/rename/coerce fields → key → canonical JSON → stage and merge
(:mod:`jobctl.db.feedstore`) → data-quality checks.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jobctl.config import Settings
from jobctl.context import Counters, RunContext
from jobctl.db.feedstore import (
    ApplyStats,
    FeedConnection,
    FeedTable,
    StateUpdate,
    apply_feed,
    feed_transaction,
    read_state,
    touch_unchanged,
)
from jobctl.durations import parse_date
from jobctl.errors import DocumentError, JobError, SourceError, UsageError
from jobctl.registry import JobSpec
from jobctl.sources.parse import iter_records, open_source
from jobctl.sources.records import BadRecord, Projector, canonical_bytes, extract_key
from jobctl.sources.spec import SourceConfig, parse_sources

ERROR_SAMPLES = 20
PROGRESS_EVERY = 5.0  # seconds between progress log lines
PROGRESS_LIVE = 0.5  # seconds between updates of a live terminal line


@dataclass(frozen=True)
class SyncPlan:
    """What one sync run will read: validated before the run row is written."""

    sources: tuple[SourceConfig, ...]
    date: date | None = None
    file: Path | None = None
    url: str | None = None


def sources_of(settings: Settings) -> dict[str, SourceConfig]:
    return parse_sources(
        settings.sections.get("sources"),
        origin=str(settings.sections.get("__origin__", "jobctl.toml")),
        default_tz=settings.timezone,
    )


def plan(
    settings: Settings,
    *,
    names: Sequence[str] = (),
    on_date: str | None = None,
    file: str | None = None,
    url: str | None = None,
) -> SyncPlan:
    """Validate the command line against the configuration (UsageError, exit 2)."""
    available = sources_of(settings)
    if not available:
        raise UsageError("no sources are configured: add a [sources.NAME] table to jobctl.toml")
    for name in names:
        if name not in available:
            raise UsageError(f"unknown source {name!r} (configured: {', '.join(available)})")
    chosen = tuple(available[n] for n in names) if names else tuple(available.values())
    if file and url:
        raise UsageError("give --file or --url, not both")
    if (file or url) and len(chosen) != 1:
        raise UsageError("--file and --url replace one source's location: add --source NAME")
    path = None
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise UsageError(f"--file {file!r} does not exist or is not a file")
    if url:
        _check_url(url)
    day = None
    if on_date is not None:
        day = parse_date(on_date, what="--date")
        latest = max(datetime.now(ZoneInfo(s.timezone)).date() for s in chosen)
        if day > latest:
            raise UsageError(f"--date {on_date} is in the future")
    return SyncPlan(chosen, day, path, url)


def _check_url(url: str) -> None:
    from urllib.parse import urlsplit

    from jobctl.redact import redact_url

    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise UsageError(f"--url {shown!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"--url {shown!r} must be an http:// or https:// URL with a host")


def default_date(source: SourceConfig, ctx: RunContext) -> date:
    """``today`` or ``yesterday`` in the source's zone, relative to the slot if any."""
    zone = ZoneInfo(source.timezone)
    base = (ctx.scheduled_for or datetime.now(UTC)).astimezone(zone).date()
    return base - timedelta(days=1) if source.date == "yesterday" else base


def run(ctx: RunContext, sync_plan: SyncPlan | None = None) -> None:
    """Sync every source of the plan (all configured sources by default)."""
    plan_ = sync_plan or plan(ctx.settings)
    per_source: dict[str, Any] = {}
    locations = []
    # The run's partition: the date asked for, else the one date all sources share.
    days = {plan_.date or default_date(source, ctx) for source in plan_.sources}
    ctx.partition = days.pop().isoformat() if len(days) == 1 else None
    ctx.stats["sources"] = per_source
    with tempfile.TemporaryDirectory(prefix="jobctl-sync-") as tmp:
        # Fetch every source first (downloads, digests), then apply them all in one
        # transaction: a run that fails or is killed changes no table at all.
        fetched = []
        for source in plan_.sources:
            day = plan_.date or default_date(source, ctx)
            location = _location(source, day, plan_, ctx.settings)
            locations.append(location)
            ctx.source = ", ".join(locations)
            fetched.append(_fetch(ctx, source, day, location, Path(tmp)))
        try:
            with feed_transaction(ctx.db, dry_run=ctx.dry_run) as conn:
                for item in fetched:
                    per_source[item.source.name] = (
                        _unchanged(ctx, conn, item) if item.unchanged else _apply(ctx, conn, item)
                    )
        except BaseException:
            # Nothing was committed: keep what was read, not what was merged.
            read, bad = ctx.counters.total, ctx.counters.errors
            ctx.counters = Counters(total=read, errors=bad)
            if len(fetched) > 1:
                ctx.stats["rolled_back"] = "no source was applied: they share one transaction"
            raise
    if not ctx.dry_run:
        # After the commit: checks see the new data. The checks run after an
        # unchanged feed too: that is what a freshness check is for.
        for item in fetched:
            if item.source.checks:
                per_source[item.source.name]["checks"] = run_checks(
                    ctx, item.source, item.partition
                )


@dataclass
class _Fetched:
    """A source ready to apply: its file, or the reason it is known unchanged."""

    source: SourceConfig
    table: FeedTable
    partition: str
    update: StateUpdate
    info: dict[str, Any]
    path: Path | None = None
    unchanged: str | None = None


def _location(source: SourceConfig, day: date, plan: SyncPlan, settings: Settings) -> str:
    if plan.file is not None:
        return str(plan.file.resolve())
    if plan.url is not None:
        return plan.url
    template = source.location
    filled = template.replace("{date}", day.isoformat())
    if source.path is not None:
        path = Path(filled).expanduser()
        return str(path if path.is_absolute() else settings.base_dir / path)
    return filled


def _fingerprint(source: SourceConfig) -> str:
    relevant = (
        source.table,
        source.key,
        source.format,
        source.record_path,
        source.encoding,
        source.delimiter,
        sorted((source.fields or {}).items()),
        sorted((source.types or {}).items()),
        source.date_dependent,
        source.complete,
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:32]


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fetch(ctx: RunContext, source: SourceConfig, day: date, location: str, tmp: Path) -> _Fetched:
    table = FeedTable(source.table, source.key, source.date_dependent)
    partition = day.isoformat() if source.date_dependent else ""
    fingerprint = _fingerprint(source)
    previous = read_state(ctx.db, table, partition)
    same_settings = previous is not None and previous.fingerprint == fingerprint
    info: dict[str, Any] = {"table": source.table, "date": day.isoformat()}

    def fetched(path: Path | None = None, unchanged: str | None = None) -> _Fetched:
        return _Fetched(source, table, partition, update, info, path, unchanged)

    update = StateUpdate(source=source.name, run_id=ctx.run_id, fingerprint=fingerprint)
    if location.startswith(("http://", "https://")):
        from jobctl.sources.http import download

        headers = dict(source.headers)
        if source.token:
            headers.setdefault("Authorization", f"Bearer {source.token}")
        use_validators = source.conditional and same_settings and not ctx.force
        ctx.log.info("%s: downloading", source.name)
        result = download(
            location,
            tmp / f"{source.name}.feed",
            headers=headers,
            timeout=source.timeout.total_seconds(),
            connect_timeout=source.connect_timeout.total_seconds(),
            retries=source.retries,
            backoff=source.backoff.total_seconds(),
            etag=previous.etag if use_validators and previous else None,
            last_modified=previous.last_modified if use_validators and previous else None,
        )
        info.update(http_status=result.status, bytes=result.bytes, attempts=result.attempts)
        update = StateUpdate(
            source=source.name,
            run_id=ctx.run_id,
            fingerprint=fingerprint,
            content_sha256=result.sha256 or (previous.content_sha256 if previous else None),
            content_bytes=result.bytes,
            etag=result.etag,
            last_modified=result.last_modified,
        )
        if result.not_modified:
            return fetched(unchanged="HTTP 304 Not Modified")
        assert result.path is not None
        path = result.path
    else:
        path = Path(location)
        if not path.is_file():
            raise JobError(f"{source.name}: feed file {location!r} does not exist")
        size = path.stat().st_size
        # A separate digest pass only when the feed may be unchanged (same size);
        # otherwise the digest is taken while the file is parsed.
        maybe_same = (
            same_settings
            and previous is not None
            and not ctx.force
            and previous.content_bytes == size
        )
        update = StateUpdate(
            source=source.name,
            run_id=ctx.run_id,
            fingerprint=fingerprint,
            content_sha256=_file_digest(path)[0] if maybe_same else None,
            content_bytes=size,
        )
        info["bytes"] = size
    if (
        same_settings
        and previous is not None
        and not ctx.force
        and update.content_sha256
        and previous.content_sha256 == update.content_sha256
    ):
        return fetched(unchanged="same content as the last sync (sha256)")
    return fetched(path)


def _unchanged(ctx: RunContext, conn: FeedConnection, item: _Fetched) -> dict[str, Any]:
    why = item.unchanged
    active = touch_unchanged(conn, item.table, item.partition, item.update)
    ctx.log.info("%s: feed unchanged (%s): %d records unchanged", item.source.name, why, active)
    ctx.counters.add({"total": active, "unchanged": active})
    item.info.update(not_modified=True, reason=why, unchanged=active)
    return item.info


def _apply(ctx: RunContext, conn: FeedConnection, item: _Fetched) -> dict[str, Any]:
    source, table, partition = item.source, item.table, item.partition
    update, info = item.update, item.info
    assert item.path is not None
    path = item.path
    reader = _Reader(source, ctx)
    started = time.monotonic()

    def check(stats: ApplyStats) -> None:
        errors = reader.errors + stats.duplicates
        total = reader.total
        if stats.duplicates:
            reader.samples.extend(
                {"key": k, "reason": "duplicate key: an earlier occurrence was replaced"}
                for k in stats.duplicate_samples[: max(0, ERROR_SAMPLES - len(reader.samples))]
            )
        if total and errors / total > source.max_error_ratio:
            # The failed run still says how many records were bad and which: without
            # the samples an operator could not tell what to fix.
            info.update(records=total, errors=errors, duplicates=stats.duplicates)
            info["error_samples"] = reader.samples[:ERROR_SAMPLES]
            ctx.stats.setdefault("sources", {})[source.name] = info
            ctx.counters.add({"total": total, "errors": errors})
            raise JobError(
                f"{source.name}: {errors} of {total} records are bad "
                f"({errors / total:.1%} > max_error_ratio {source.max_error_ratio:.1%}); "
                "nothing was applied"
            )
        if stats.distinct == 0 and stats.removed > 0:
            raise JobError(
                f"{source.name}: the feed has no usable records; refusing to mark "
                f"{stats.removed} rows removed (nothing was applied)"
            )

    digest = hashlib.sha256() if update.content_sha256 is None else None

    def final_state() -> StateUpdate:
        if digest is None:
            return update
        while stream.read(1 << 20):  # the digest covers the whole file
            pass
        return replace(update, content_sha256=digest.hexdigest())

    try:
        with open_source(path, digest.update if digest is not None else None) as stream:
            records = iter_records(
                stream,
                source.format,
                record_path=source.record_path,
                encoding=source.encoding,
                delimiter=source.delimiter,
            )
            stats = apply_feed(
                conn,
                table,
                reader.rows(records),
                partition=partition,
                complete=source.complete,
                state=final_state,
                check=check,
            )
    except (DocumentError, SourceError) as exc:
        if str(exc).startswith(f"{source.name}:"):
            raise
        named = type(exc)(f"{source.name}: {exc}; nothing was applied")
        named.transient = exc.transient
        raise named from exc
    elapsed = time.monotonic() - started
    errors = reader.errors + stats.duplicates
    ctx.counters.add(
        {
            "total": reader.total,
            "new": stats.new,
            "updated": stats.updated,
            "unchanged": stats.unchanged,
            "removed": stats.removed,
            "errors": errors,
        }
    )
    info.update(
        records=reader.total,
        new=stats.new,
        updated=stats.updated,
        unchanged=stats.unchanged,
        removed=stats.removed,
        errors=errors,
        duplicates=stats.duplicates,
        rows_sent=stats.sent,
        first_load=stats.first_load,
        seconds=round(elapsed, 3),
        records_per_second=int(reader.total / elapsed) if elapsed > 0 else None,
    )
    if reader.samples:
        info["error_samples"] = reader.samples[:ERROR_SAMPLES]
    verb = "would apply" if ctx.dry_run else "merged"
    ctx.log.info(
        "%s: %s %d records in %.1fs: %d new, %d updated, %d unchanged, %d removed, %d errors",
        source.name,
        verb,
        reader.total,
        elapsed,
        stats.new,
        stats.updated,
        stats.unchanged,
        stats.removed,
        errors,
    )
    return info


class _Reader:
    """Turns parsed records into (key, canonical JSON), counting and sampling bad ones."""

    def __init__(self, source: SourceConfig, ctx: RunContext) -> None:
        self.source = source
        self.ctx = ctx
        self.total = 0
        self.errors = 0
        self.samples: list[dict[str, Any]] = []
        self.project = (
            Projector(source.fields, source.types) if source.fields or source.types else None
        )
        self.progress: Callable[..., None] | None = ctx.progress
        fields = source.fields or {}
        self.raw_key_fields = [fields.get(k, k) for k in source.key]

    def bad(self, item: BadRecord) -> None:
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append({"position": item.position, "key": item.key, "reason": item.reason})

    def rows(
        self, records: Iterator[dict[str, Any] | BadRecord]
    ) -> Iterator[tuple[tuple[str, ...], bytes | None]]:
        """(key, canonical JSON); (key, None) for a bad record whose key is known."""
        key_fields = self.source.key
        project = self.project
        every = PROGRESS_LIVE if self.progress is not None else PROGRESS_EVERY
        next_report = time.monotonic() + every
        started = time.monotonic()
        total = 0
        for item in records:
            total += 1
            if total & 0xFFF == 0 and time.monotonic() >= next_report:
                self.total = total
                self._report(total, started)
                next_report = time.monotonic() + every
            if isinstance(item, BadRecord):
                self.bad(item)
                continue
            record = project(item, total) if project is not None else item
            if isinstance(record, BadRecord):
                # Still in the feed: its key keeps the stored row from being marked removed.
                raw_key = extract_key(item, self.raw_key_fields, position=total)
                known = None if isinstance(raw_key, BadRecord) else raw_key
                self.bad(
                    BadRecord(record.position, record.reason, "/".join(known) if known else None)
                )
                if known is not None and not any("\x00" in k for k in known):
                    yield known, None
                continue
            key = extract_key(record, key_fields, position=total)
            if isinstance(key, BadRecord):
                self.bad(key)
                continue
            if any("\x00" in k for k in key):
                self.bad(
                    BadRecord(
                        total,
                        "key contains a NUL character, which PostgreSQL cannot store",
                        "/".join(key).replace("\x00", ""),
                    )
                )
                continue
            data = canonical_bytes(record)
            if b"\\u0000" in data:
                self.bad(
                    BadRecord(
                        total,
                        "contains a NUL character, which PostgreSQL cannot store",
                        "/".join(key),
                    )
                )
                yield key, None
                continue
            yield key, data
        self.total = total

    def _report(self, total: int, started: float) -> None:
        rate = total / max(time.monotonic() - started, 1e-6)
        if self.progress is not None:
            self.progress(self.source.name, total)
        else:
            self.ctx.log.info("%s: %d records read (%d/s)", self.source.name, total, rate)


def run_checks(ctx: RunContext, source: SourceConfig, partition: str) -> list[dict[str, Any]]:
    """Data-quality checks after the sync: failures are warnings, never a failed sync."""
    from sqlalchemy import text

    results = []
    for check in source.checks:
        entry: dict[str, Any] = {"name": check.name, "min": check.min, "max": check.max}
        try:
            with ctx.transaction() as conn:
                params = {"partition_date": partition or None}
                stmt = text(check.sql)
                bound = {k: v for k, v in params.items() if f":{k}" in check.sql}
                value = conn.execute(stmt, bound).scalar()
            number = float(value) if value is not None else None
            entry["value"] = number
            ok = (
                number is not None
                and (check.min is None or number >= check.min)
                and (check.max is None or number <= check.max)
            )
            entry["ok"] = ok
        except Exception as exc:  # a broken check must not fail a good sync
            entry.update(ok=False, error=str(exc).strip().splitlines()[0][:300])
        if not entry["ok"]:
            ctx.log.warning(
                "%s: check %r failed: value %s (min %s, max %s)%s",
                source.name,
                check.name,
                entry.get("value"),
                check.min,
                check.max,
                f": {entry['error']}" if "error" in entry else "",
            )
            ctx.stats.setdefault("warnings", []).append(f"check {check.name!r} failed")
        results.append(entry)
    return results


def served_date(settings: Settings, slot: datetime) -> date | None:
    """The date a tick works on, when every source agrees on it (else None)."""
    days = set()
    sources = list(sources_of(settings).values())
    dated = [s for s in sources if s.date_dependent]
    for source in dated or sources:
        day = slot.astimezone(ZoneInfo(source.timezone)).date()
        days.add(day - timedelta(days=1) if source.date == "yesterday" else day)
    return days.pop() if len(days) == 1 else None


SPEC = JobSpec(
    "sync",
    run,
    "Ingest each configured feed into its table with change detection",
    builtin=True,
    date_based=True,
    served_date=served_date,
)

__all__ = ["SPEC", "SyncPlan", "plan", "run", "sources_of"]
