"""SQLAlchemy Core definitions of jobctl's own tables (must agree with ``sql/``)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "jobctl"
metadata = MetaData(schema=SCHEMA)

runs = Table(
    "runs",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("job", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("partition", Text),
    Column("trigger", Text, nullable=False),
    Column("parent_id", BigInteger),
    Column("status", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("duration_ms", BigInteger),
    Column("attempts", Integer, nullable=False),
    Column("records_total", BigInteger, nullable=False),
    Column("records_new", BigInteger, nullable=False),
    Column("records_updated", BigInteger, nullable=False),
    Column("records_unchanged", BigInteger, nullable=False),
    Column("records_errors", BigInteger, nullable=False),
    Column("records_removed", BigInteger, nullable=False),
    Column("records_deleted", BigInteger, nullable=False),
    Column("stats", JSONB, nullable=False),
    Column("error_message", Text),
    Column("error_detail", Text),
    Column("source", Text),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("jobctl_version", Text, nullable=False),
    Column("scheduled_for", DateTime(timezone=True)),
    Column("lock_backend_pid", Integer),
    Column("lock_key", Integer),
    Column("log_tail", ARRAY(Text), nullable=False),
    # sql/0003: last, as ALTER TABLE ADD COLUMN places it. A dry run is `completed`
    # but covers no slot and no date.
    Column("dry_run", Boolean, nullable=False),
    # sql/0007: who asked for the run (a web token's name, --by, a schedule's creator).
    Column("requested_by", Text),
)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("checksum", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

feed_state = Table(
    "feed_state",
    metadata,
    Column("target", Text, primary_key=True),
    Column("partition", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("last_synced_at", DateTime(timezone=True), nullable=False),
    Column("last_run_id", BigInteger),
    Column("fingerprint", Text),
    Column("content_sha256", Text),
    Column("content_bytes", BigInteger),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("rows_active", BigInteger, nullable=False),
)

# sql/0004: written only by jobctl.db.alert_state (guarded statements, plain SQL).
alert_state = Table(
    "alert_state",
    metadata,
    Column("job", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failed_at", DateTime(timezone=True)),
    Column("last_failed_run", BigInteger),
    Column("last_alert_kind", Text),
    Column("last_alert_at", DateTime(timezone=True)),
    Column("last_alert_run", BigInteger),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# sql/0005: written only by jobctl.db.report_deliveries.
report_deliveries = Table(
    "report_deliveries",
    metadata,
    Column("period_start", Date, primary_key=True),
    Column("period_end", Date, primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("recipient", Text, primary_key=True),
    Column("run_id", BigInteger),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)

# sql/0006: one-off scheduled runs, written only by jobctl.db.scheduled (plain SQL).
scheduled = Table(
    "scheduled",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("job", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("timezone", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Text),
    Column("status", Text, nullable=False),
    Column("every", Text),
    Column("until", DateTime(timezone=True)),
    Column("anchor_local", DateTime(timezone=False)),
    Column("occurrence", Integer, nullable=False),
    Column("previous_id", BigInteger),
    Column("claimed_by", Text),
    Column("claimed_at", DateTime(timezone=True)),
    Column("claim_backend_pid", Integer),
    Column("attempts", Integer, nullable=False),
    Column("run_id", BigInteger),
    Column("run_status", Text),
    Column("error_message", Text),
    Column("finished_at", DateTime(timezone=True)),
)

# sql/0008: runs by job and status over the whole ledger, kept by triggers on
# jobctl.runs (nothing in Python writes it); read by jobctl.db.job_state.
run_totals = Table(
    "run_totals",
    metadata,
    Column("job", Text, primary_key=True),
    Column("status", Text, primary_key=True),
    Column("runs", BigInteger, nullable=False),
    Column("done_runs", BigInteger, nullable=False),
    *(
        Column(f"records_{kind}", BigInteger, nullable=False)
        for kind in ("total", "new", "updated", "unchanged", "errors", "removed", "deleted")
    ),
)

# Columns of the ledger as the user sees them (``runs list --json`` keys).
LEDGER_COLUMNS = [
    c.name for c in runs.columns if c.name not in {"lock_backend_pid", "lock_key", "log_tail"}
]
