"""``jobctl sync``: read each configured source for a date and apply it to its table.

fetch (HTTP download or local file) → recognise an unchanged feed (HTTP
validators, or the same content digest and settings as the last sync) → stream
records → select/rename/coerce fields → key → canonical JSON → stage and merge
(:mod:`jobctl.db.feedstore`) → data-quality checks.

Downloads go to ``<data dir>/downloads/sync-<run>-<pid>-<host>/``, removed when the
run ends; a run killed before that leaves its directory behind, which the next sync
removes (its process is gone, or it is older than :data:`STALE_DOWNLOADS`).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobctl.config import Settings
from jobctl.config_models import SourceConfig
from jobctl.days import check_over
from jobctl.db.errors import first_line
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
from jobctl.errors import DocumentError, JobError, SourceError, UndecodableFeed, UsageError
from jobctl.jobspec import JobSpec, Planning, stored_params
from jobctl.sources.parse import Item, error_answer, iter_records, open_source
from jobctl.sources.records import (
    BadRecord,
    Projector,
    UnstorableRecord,
    canonical_bytes,
    extract_key,
)

if TYPE_CHECKING:
    # The run context brings SQLAlchemy: a sync skipped because its lock is held
    # elsewhere only plans (validates) and never needs it.
    from jobctl.context import RunContext

ERROR_SAMPLES = 20
PROGRESS_EVERY = 5.0  # seconds between progress log lines
PROGRESS_LIVE = 0.5  # seconds between updates of a live terminal line
#: A download directory this old belongs to no running sync (none runs for a day).
STALE_DOWNLOADS = timedelta(days=1)
#: The longest key, in UTF-8 bytes, a record may have: a btree entry holds at most
#: 2,704 bytes (PostgreSQL's limit, headers and a date partition included). One longer
#: key failed the whole feed when the primary key was built; now it is that record's
#: error. A key of fewer characters than a quarter of this is not measured in bytes.
KEY_BYTES_LIMIT = 2600


@dataclass(frozen=True)
class SyncPlan:
    """What one sync run will read: validated before the run row is written."""

    sources: tuple[SourceConfig, ...]
    date: date | None = None
    file: Path | None = None
    url: str | None = None
    #: Stored with the run (``--date``, ``--source``, ``--dry-run`` as given).
    params: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SyncArgs:
    """``jobctl sync``'s own arguments."""

    sources: Sequence[str] = ()
    on_date: str | None = None
    file: str | None = None
    url: str | None = None


def sources_of(settings: Settings) -> dict[str, SourceConfig]:
    return dict(settings.sources)


def plan(
    settings: Settings,
    *,
    names: Sequence[str] = (),
    on_date: str | None = None,
    file: str | None = None,
    url: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> SyncPlan:
    """Validate the command line against the configuration (UsageError, exit 2).

    ``--date`` is a day in each source's zone. A source that reads finished days
    (``date = "yesterday"``) is refused a day that has not ended in its zone unless
    ``force`` (a run records its date as done); a ``date = "today"`` source reads
    the day in progress on every tick, so only a day not yet begun is refused.
    ``now`` (default: the real clock) decides.
    """
    available = sources_of(settings)
    if not available:
        raise settings.nothing_configured("sources", "[sources.NAME]")
    for name in names:
        if name not in available:
            raise UsageError(f"unknown source {name!r} (configured: {', '.join(available)})")
    chosen = tuple(available[n] for n in names) if names else tuple(available.values())
    if file and url:
        raise UsageError("give --file or --url, not both")
    if (file or url) and len(chosen) != 1:
        raise UsageError("--file and --url replace one source's location: add --source NAME")
    if (file or url) and chosen[0].query is not None:
        raise UsageError(f"source {chosen[0].name!r} is a query: --file and --url do not apply")
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
        finished = [s.timezone for s in chosen if s.date == "yesterday"]
        if finished:
            check_over(day, finished, now=now, what="--date", force=force)
        # Every source: a day that has begun nowhere yet has no data anywhere.
        check_over(day, [s.timezone for s in chosen], now=now, what="--date", force=True)
    return SyncPlan(chosen, day, path, url)


def plan_args(settings: Settings, args: SyncArgs, planning: Planning) -> SyncPlan:
    """The command's plan (:func:`plan`), with the params stored with its run."""
    planned = plan(
        settings,
        names=args.sources,
        on_date=args.on_date,
        file=args.file,
        url=args.url,
        force=planning.force,
        now=planning.now,
    )
    params = stored_params(date=args.on_date, sources=args.sources, dry_run=planning.dry_run)
    return replace(planned, params=params)


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
    """The source's default date (see ``SourceConfig.day_at``) as of the slot if any."""
    return source.day_at(ctx.scheduled_for or datetime.now(UTC))


def run(ctx: RunContext, plan_: SyncPlan) -> None:
    """Sync every source of the plan (all configured sources by default)."""
    per_source: dict[str, Any] = {}
    locations = []
    # The run's partition: the date asked for, else the one date all sources share.
    days = {plan_.date or default_date(source, ctx) for source in plan_.sources}
    ctx.partition = days.pop().isoformat() if len(days) == 1 else None
    ctx.stats["sources"] = per_source
    with _work_dir(ctx) as tmp:
        # Fetch every source first (downloads, digests), then apply them all in one
        # transaction: a run that fails or is killed changes no table at all.
        fetched = []
        for source in plan_.sources:
            day = plan_.date or default_date(source, ctx)
            location = _location(source, day, plan_, ctx.settings)
            locations.append(location)
            ctx.source = ", ".join(locations)
            fetched.append(_fetch(ctx, source, day, location, tmp))
        ctx.check_lock()  # downloads can be long: stop before applying if the lock went
        try:
            with feed_transaction(ctx.db, dry_run=ctx.dry_run) as conn:
                for item in fetched:
                    ctx.check_lock()
                    per_source[item.source.name] = (
                        _unchanged(ctx, conn, item) if item.unchanged else _apply(ctx, conn, item)
                    )
        except BaseException:
            # Nothing was committed: keep what was read, not what was merged.
            from jobctl.context import Counters

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


@contextlib.contextmanager
def _work_dir(ctx: RunContext) -> Iterator[Path]:
    """This run's download directory under the data dir, stale ones swept first."""
    root = ctx.settings.data_dir / "downloads"
    host = socket.gethostname()
    mine = root / f"sync-{ctx.run_id}-{os.getpid()}-{host}"
    try:
        mine.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(
            f"cannot create the download directory {mine}: {exc.strerror or exc} "
            "(set data_dir in jobctl.toml or JOBCTL_DATA_DIR)",
            transient=False,
        ) from exc
    _sweep(ctx, root, host, keep=mine)
    try:
        yield mine
    finally:
        shutil.rmtree(mine, ignore_errors=True)


def _sweep(ctx: RunContext, root: Path, host: str, *, keep: Path) -> None:
    """Remove what killed syncs left in ``root``.

    A directory of this host is stale when its process is gone (a live one is kept,
    however long its download); one of another host sharing the data dir, whose
    processes cannot be seen from here, when it is older than STALE_DOWNLOADS.
    """
    cutoff = time.time() - STALE_DOWNLOADS.total_seconds()
    swept = 0
    for entry in root.glob("sync-*"):
        if entry == keep:
            continue
        parts = entry.name.split("-", 3)  # sync, run id, pid, host (which may hold '-')
        try:
            if len(parts) == 4 and parts[3] == host:
                stale = not _alive(int(parts[2]))
            else:
                stale = entry.stat().st_mtime < cutoff
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            swept += 1
    if swept:
        ctx.log.info("removed %d download directories left by killed syncs in %s", swept, root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _answer_check(source: SourceConfig) -> Callable[[Path], str | None] | None:
    """``error_when``: a function telling the API's error message in a body (or None)."""
    when = source.error_when
    if not when:
        return None

    def check(path: Path) -> str | None:
        with open_source(path) as stream:
            return error_answer(stream, when, source.error_message, encoding=source.encoding)

    return check


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
    day: date | None = None  # a query source's :date
    charset: str | None = None  # what an HTTP answer declared (see DownloadResult)


def _location(source: SourceConfig, day: date, plan: SyncPlan, settings: Settings) -> str:
    if plan.file is not None:
        return str(plan.file.resolve())
    if plan.url is not None:
        return plan.url
    if source.query is not None:
        from jobctl.redact import redact_dsn

        where = redact_dsn(source.database_url) if source.database_url else "the jobctl database"
        return f"query on {where}"
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
        *((source.exclude,) if source.exclude else ()),  # absent: older fingerprints hold
        *((source.query, source.database_url) if source.query is not None else ()),
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


class _Origin:
    """What fetching any kind of source starts from: its table, partition and last sync."""

    def __init__(self, ctx: RunContext, source: SourceConfig, day: date) -> None:
        self.source = source
        self.table = FeedTable(source.table, source.key, source.date_dependent)
        self.partition = day.isoformat() if source.date_dependent else ""
        self.fingerprint = _fingerprint(source)
        self.previous = read_state(ctx.db, self.table, self.partition)
        #: The last sync, when its validators and digest can tell this feed unchanged:
        #: read with the same settings (a changed setting changes the rows), no --force.
        self.comparable = (
            self.previous
            if self.previous is not None
            and self.previous.fingerprint == self.fingerprint
            and not ctx.force
            else None
        )
        self.info: dict[str, Any] = {"table": source.table, "date": day.isoformat()}
        self.run_id = ctx.run_id

    def update(
        self,
        *,
        content_sha256: str | None = None,
        content_bytes: int | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> StateUpdate:
        """The feed state this sync will record, with what the fetch learnt of the feed."""
        return StateUpdate(
            source=self.source.name,
            run_id=self.run_id,
            fingerprint=self.fingerprint,
            content_sha256=content_sha256,
            content_bytes=content_bytes,
            etag=etag,
            last_modified=last_modified,
        )

    def fetched(self, update: StateUpdate, path: Path | None = None) -> _Fetched:
        """``path`` ready to apply, or known unchanged when its digest is the last sync's."""
        last = self.comparable
        if (
            last is not None
            and update.content_sha256
            and last.content_sha256 == update.content_sha256
        ):
            return self.unchanged(update, "same content as the last sync (sha256)")
        return _Fetched(self.source, self.table, self.partition, update, self.info, path)

    def unchanged(self, update: StateUpdate, why: str) -> _Fetched:
        return _Fetched(self.source, self.table, self.partition, update, self.info, unchanged=why)


def _fetch(ctx: RunContext, source: SourceConfig, day: date, location: str, tmp: Path) -> _Fetched:
    """Get a source ready to apply: download it, find its file, or (a query) plan it."""
    origin = _Origin(ctx, source, day)
    if source.query is not None:
        # Read while it is applied (streamed into the merge): a query has no digest or
        # validator telling it unchanged; the merge counts the unchanged rows.
        origin.info["query"] = location
        return _Fetched(
            source, origin.table, origin.partition, origin.update(), origin.info, day=day
        )
    if location.startswith(("http://", "https://")):
        return _download(ctx, origin, location, tmp)
    return _local_file(origin, location)


def _download(ctx: RunContext, origin: _Origin, url: str, tmp: Path) -> _Fetched:
    """The HTTP half: download into ``tmp``, conditionally when the last sync allows it.

    The download takes the body's digest as it writes it, so an unchanged body is
    recognised without a second pass over the file.
    """
    from jobctl.sources.http import ErrorAnswer, FetchFailed, download

    source, info = origin.source, origin.info
    headers = dict(source.headers)
    if source.token:
        headers.setdefault("Authorization", f"Bearer {source.token}")
    # If-None-Match / If-Modified-Since only for a feed read with the same settings.
    last = origin.comparable if source.conditional else None
    ctx.log.info("%s: downloading", source.name)
    if ctx.progress is not None:
        ctx.progress(source.name, 0, phase="downloading")
    try:
        result = download(
            url,
            tmp / f"{source.name}.feed",
            headers=headers,
            timeout=source.timeout.total_seconds(),
            connect_timeout=source.connect_timeout.total_seconds(),
            retries=source.retries,
            backoff=source.backoff.total_seconds(),
            etag=last.etag if last else None,
            last_modified=last.last_modified if last else None,
            check_body=_answer_check(source),
            retry_check_failures=source.retry_on_error_body,
        )
    except FetchFailed as exc:
        # the run row says how many requests a failed fetch made (README: Retries)
        info["requests"] = exc.requests
        ctx.stats.setdefault("sources", {})[source.name] = info
        if isinstance(exc, ErrorAnswer):
            raise SourceError(f"source {source.name}: {exc}", transient=exc.transient) from exc
        raise
    info.update(http_status=result.status, bytes=result.bytes, requests=result.requests)
    previous = origin.previous
    update = origin.update(
        # A 304 has no body to digest: the stored content is the last one.
        content_sha256=result.sha256 or (previous.content_sha256 if previous else None),
        content_bytes=result.bytes,
        etag=result.etag,
        last_modified=result.last_modified,
    )
    if result.not_modified:
        return origin.unchanged(update, "HTTP 304 Not Modified")
    assert result.path is not None
    return replace(origin.fetched(update, result.path), charset=result.charset)


def _local_file(origin: _Origin, location: str) -> _Fetched:
    """The file half: a local feed file, checked for an API's error answer."""
    source = origin.source
    path = Path(location)
    if not path.is_file():
        raise JobError(f"{source.name}: feed file {location!r} does not exist")
    check_answer = _answer_check(source)
    answer = check_answer(path) if check_answer is not None else None
    if answer is not None:
        raise SourceError(
            f"source {source.name}: the API answered an error: "
            f"{answer or '(no message in the answer)'}",
            transient=False,
        )
    size = path.stat().st_size
    # A separate digest pass only when the feed may be unchanged (same size);
    # otherwise the digest is taken while the file is parsed.
    last = origin.comparable
    maybe_same = last is not None and last.content_bytes == size
    update = origin.update(
        content_sha256=_file_digest(path)[0] if maybe_same else None, content_bytes=size
    )
    origin.info["bytes"] = size
    return origin.fetched(update, path)


def _unchanged(ctx: RunContext, conn: FeedConnection, item: _Fetched) -> dict[str, Any]:
    why = item.unchanged
    active = touch_unchanged(conn, item.table, item.partition, item.update)
    ctx.log.info("%s: feed unchanged (%s): %d records unchanged", item.source.name, why, active)
    ctx.counters.add({"total": active, "unchanged": active})
    item.info.update(not_modified=True, reason=why, unchanged=active)
    return item.info


def _refusal(ctx: RunContext, item: _Fetched, reader: _Reader) -> Callable[..., None]:
    """What a refused apply records before it raises."""
    source, info = item.source, item.info

    def refused(errors: int, **more: Any) -> None:
        # The failed run still says how many records were read, how many were bad and
        # which: without that an operator could not tell what to fix.
        info.update(records=reader.total, errors=errors, **more)
        if reader.samples:
            info["error_samples"] = reader.samples[:ERROR_SAMPLES]
        ctx.stats.setdefault("sources", {})[source.name] = info
        ctx.counters.add({"total": reader.total, "errors": errors})

    return refused


def _guards(
    ctx: RunContext, item: _Fetched, reader: _Reader, refused: Callable[..., None]
) -> Callable[[ApplyStats], None]:
    """The checks made before the merge commits: error ratio, an empty feed, removals."""
    source, partition = item.source, item.partition

    def check(stats: ApplyStats) -> None:
        errors = reader.errors + stats.duplicates
        total = reader.total
        if stats.duplicates:
            reader.samples.extend(
                {"key": k, "reason": "duplicate key: an earlier occurrence was replaced"}
                for k in stats.duplicate_samples[: max(0, ERROR_SAMPLES - len(reader.samples))]
            )
        if total and errors / total > source.max_error_ratio:
            refused(errors, duplicates=stats.duplicates)
            raise JobError(
                f"{source.name}: {errors} of {total} records are bad "
                f"({errors / total:.1%} > max_error_ratio {source.max_error_ratio:.1%})"
                f"{reader.commonest()}; nothing was applied"
            )
        if stats.distinct == 0 and stats.removed > 0:
            refused(errors, duplicates=stats.duplicates)
            raise JobError(
                f"{source.name}: the feed has no usable records; refusing to mark "
                f"{stats.removed} rows removed (nothing was applied)"
            )
        base = stats.active_before
        if stats.removed and base and stats.removed / base > source.max_removed_ratio:
            of = f"the {partition} rows" if partition else "its rows"
            if not ctx.force:
                # A complete feed that shrank this much is far more often a cut or
                # broken export than a real mass removal.
                refused(errors, would_remove=stats.removed, active_before=base)
                raise JobError(
                    f"{source.name}: the feed would mark {stats.removed} of {base} active "
                    f"rows removed ({stats.removed / base:.1%} of {of} > max_removed_ratio "
                    f"{source.max_removed_ratio:.0%}); nothing was applied. If they really "
                    "left the feed, run again with --force (or raise max_removed_ratio)"
                )
            ctx.log.warning(
                "%s: --force: marking %d of %d active rows removed (over max_removed_ratio %s)",
                source.name,
                stats.removed,
                base,
                f"{source.max_removed_ratio:.0%}",
            )

    return check


def _apply(ctx: RunContext, conn: FeedConnection, item: _Fetched) -> dict[str, Any]:
    source, table, partition = item.source, item.table, item.partition
    update, info = item.update, item.info
    reader = _Reader(source, ctx)
    started = time.monotonic()

    refused = _refusal(ctx, item, reader)
    check = _guards(ctx, item, reader, refused)

    digest = hashlib.sha256() if update.content_sha256 is None and source.query is None else None

    def final_state() -> StateUpdate:
        if digest is None:
            return update
        while stream.read(1 << 20):  # the digest covers the whole file
            pass
        return replace(update, content_sha256=digest.hexdigest())

    try:
        with contextlib.ExitStack() as opened:
            if source.query is not None:
                records = opened.enter_context(_query_records(ctx, item))
            else:
                assert item.path is not None
                stream = opened.enter_context(
                    open_source(item.path, digest.update if digest is not None else None)
                )
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
        refused(reader.errors)
        if str(exc).startswith(f"{source.name}:"):
            raise
        hint = _charset_hint(exc, source.encoding, item.charset)
        named = type(exc)(f"{source.name}: {exc}{hint}; nothing was applied")
        named.transient = exc.transient
        raise named from exc
    if ctx.progress is not None:  # merged; the run's one transaction commits next
        ctx.progress(source.name, reader.total, phase="committing")
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
    if stats.restored:  # no ledger column of its own: records_updated stays real updates
        ctx.stats["restored"] = ctx.stats.get("restored", 0) + stats.restored
    info.update(
        records=reader.total,
        new=stats.new,
        updated=stats.updated,
        unchanged=stats.unchanged,
        removed=stats.removed,
        restored=stats.restored,
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
        "%s: %s %d records in %.1fs: %d new, %d updated, %d unchanged, %d removed, %d errors%s",
        source.name,
        verb,
        reader.total,
        elapsed,
        stats.new,
        stats.updated,
        stats.unchanged,
        stats.removed,
        errors,
        f", {stats.restored} restored (back after removal)" if stats.restored else "",
    )
    return info


@contextlib.contextmanager
def _query_records(ctx: RunContext, item: _Fetched) -> Iterator[Iterator[Item]]:
    """The records of a query source's rows, streamed from its database."""
    from jobctl.db.engine import Database, normalise_url
    from jobctl.db.query import stream_query
    from jobctl.sources.sql import parse_query, records_of

    source = item.source
    assert source.query is not None and item.day is not None
    parsed = parse_query(source.query)
    db = ctx.db if source.database_url is None else Database(normalise_url(source.database_url))
    params = {"date": item.day} if "date" in parsed.params else {}
    ctx.log.info("%s: running the %s", source.name, item.info["query"])
    with stream_query(
        db,
        parsed.text,
        params,
        timezone=source.timezone,
        statement_timeout=(
            source.statement_timeout.total_seconds() if source.statement_timeout else None
        ),
        connect_timeout=source.connect_timeout.total_seconds(),
        cursor_name=f"jobctl_sync_{ctx.run_id}",
    ) as (columns, rows):
        yield records_of(columns, rows)


def _charset_hint(exc: Exception, encoding: str, declared: str | None) -> str:
    """For a feed that does not decode: the charset its server declared, if another.

    Not applied by itself: servers declare their default (ISO-8859-1 for any text) as
    often as the truth, and latin-1 decodes every byte — a wrong guess would be stored
    silently. Said, the operator can check and set ``encoding``.
    """
    if not declared or not isinstance(exc, UndecodableFeed):
        return ""
    try:
        if codecs.lookup(declared).name == codecs.lookup(encoding).name:
            return ""
    except LookupError:
        return ""
    return (
        f' (the server declared charset={declared}: if that is right, set encoding = "{declared}")'
    )


_too_long = f"more than a PostgreSQL index holds (at most {KEY_BYTES_LIMIT:,} bytes)"


def _key_bytes(key: tuple[str, ...]) -> int:
    """The key's length in UTF-8 bytes when it is over :data:`KEY_BYTES_LIMIT`, else 0."""
    size = sum(len(part.encode("utf-8", "surrogatepass")) for part in key)
    return size if size > KEY_BYTES_LIMIT else 0


def _key_shown(key: tuple[str, ...]) -> str:
    shown = "/".join(key)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _has_nul(key: tuple[str, ...]) -> bool:
    return any("\x00" in part for part in key)


def _escapes_nul(data: bytes) -> bool:
    """Whether JSON text ``data`` holds the escape ``\\u0000`` (not ``\\\\u0000``: an
    escaped backslash followed by the text ``u0000``)."""
    at = data.find(b"\\u0000")
    while at >= 0:
        start = at
        while start and data[start - 1] == 0x5C:  # backslashes before it
            start -= 1
        if (at - start) % 2 == 0:  # an even run escapes itself: this one is a NUL
            return True
        at = data.find(b"\\u0000", at + 1)
    return False


def _nul_key(position: int, key: tuple[str, ...]) -> BadRecord:
    return BadRecord(
        position,
        "key contains a NUL character, which PostgreSQL cannot store",
        "/".join(key).replace("\x00", ""),
    )


class _Reader:
    """Turns parsed records into (key, canonical JSON), counting and sampling bad ones."""

    def __init__(self, source: SourceConfig, ctx: RunContext) -> None:
        self.source = source
        self.ctx = ctx
        self.total = 0
        self.errors = 0
        self.samples: list[dict[str, Any]] = []
        self.project = (
            Projector(source.fields, source.types, source.exclude)
            if source.fields or source.types or source.exclude
            else None
        )
        self.progress: Callable[..., None] | None = ctx.progress
        fields = source.fields or {}
        self.raw_key_fields = [fields.get(k, k) for k in source.key]
        #: The fields of the first record that lacked a key field: what the key could be.
        self.fields_seen: list[str] | None = None

    def bad(self, item: BadRecord) -> None:
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append({"position": item.position, "key": item.key, "reason": item.reason})

    def commonest(self) -> str:
        """``, most often: <reason> (e.g. record N)`` of the sampled bad records, for the
        refusal's message: a key field named wrong makes every record bad, and says so."""
        reasons = Counter(str(s["reason"]) for s in self.samples if "position" in s)
        if not reasons:
            return ""
        reason = reasons.most_common(1)[0][0]
        where = next(s["position"] for s in self.samples if s.get("reason") == reason)
        # a CSV or NDJSON line's own reason names its line
        said = f"; most often: {reason}" + (
            "" if reason.startswith("line ") else f" (e.g. record {where})"
        )
        if reason.startswith("missing key field") and self.fields_seen:
            shown = ", ".join(repr(name) for name in self.fields_seen[:12])
            more = ", …" if len(self.fields_seen) > 12 else ""
            said += f"; the records have {shown}{more}"
        return said

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
        if self.progress is not None:
            self.progress(self.source.name, 0, phase="reading")
        for item in records:
            total += 1
            self.total = total  # also what a failed parse reports as read
            if total & 0xFFF == 0 and time.monotonic() >= next_report:
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
                if known is not None and not _has_nul(known):
                    yield known, None
                continue
            key = extract_key(record, key_fields, position=total)
            if isinstance(key, BadRecord):
                if self.fields_seen is None and key.reason.startswith("missing key field"):
                    self.fields_seen = list(record)
                self.bad(key)
                continue
            if sum(map(len, key)) > KEY_BYTES_LIMIT // 4 and (size := _key_bytes(key)):
                # Not staged either: no row can have a key the index cannot hold.
                self.bad(BadRecord(total, f"key is {size:,} bytes: {_too_long}", _key_shown(key)))
                continue
            try:
                data = canonical_bytes(record)
            except UnstorableRecord as exc:
                if _has_nul(key):
                    self.bad(_nul_key(total, key))
                    continue
                self.bad(BadRecord(total, str(exc), "/".join(key)))
                yield key, None  # in the feed all the same: not removed
                continue
            # A NUL anywhere, the key's fields included (they are in the record), is
            # written \u0000 in the canonical JSON: one search of it covers both, and
            # the memchr for a backslash mostly spares even that.
            if b"\\" in data and _escapes_nul(data):
                if _has_nul(key):
                    self.bad(_nul_key(total, key))
                    continue
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
        if self.progress is not None:  # all read and staged: the merge starts
            self.progress(self.source.name, total, phase="applying")

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
            entry.update(ok=False, error=first_line(exc)[:300])
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


def common_day(sources: Iterable[SourceConfig], moment: datetime) -> date | None:
    """The default date of every one of ``sources`` at ``moment``, if they agree."""
    days = {source.day_at(moment) for source in sources}
    return days.pop() if len(days) == 1 else None


def served_date(settings: Settings, slot: datetime) -> date | None:
    """The date a tick works on, when every source agrees on it (else None)."""
    sources = list(sources_of(settings).values())
    dated = [s for s in sources if s.date_dependent]
    return common_day(dated or sources, slot)


SPEC = JobSpec(
    "sync",
    run,
    plan_args,
    default_args=SyncArgs(),
    plan_type=SyncPlan,
    description="Ingest each configured feed into its table with change detection",
    builtin=True,
    date_based=True,
    served_date=served_date,
)

__all__ = ["SPEC", "SyncArgs", "SyncPlan", "plan", "run", "sources_of"]
