"""Example user jobs: register your own with ``@jobctl.job(NAME)``."""

from __future__ import annotations

from sqlalchemy import text

import jobctl


@jobctl.job("table_sizes", description="Logs the size of every table in the database")
def table_sizes(ctx: jobctl.RunContext) -> jobctl.Counters:
    rows = ctx.conn.execute(
        text(
            "SELECT n.nspname || '.' || c.relname AS name, pg_total_relation_size(c.oid) AS bytes"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY bytes DESC"
        )
    ).all()
    for name, size in rows:
        ctx.log.info("%s: %d kB", name, size // 1024)
    ctx.stats["tables"] = {name: size for name, size in rows}
    return jobctl.Counters(total=len(rows), unchanged=len(rows))
