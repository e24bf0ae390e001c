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


# What the example application's own migrations and users would have made: the tables
# the retention policies and the weekly report of jobctl.toml work on. Rows are spread
# over the last 400 days (relative to now, so the policies always find old rows);
# setseed makes them the same on every machine. Idempotent: a second run adds nothing.
APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id int PRIMARY KEY, email text NOT NULL, name text NOT NULL, weekly_mail boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS wines (
    id int PRIMARY KEY, name text NOT NULL, vintage int NOT NULL,
    peak_from date NOT NULL, peak_until date NOT NULL
);
CREATE TABLE IF NOT EXISTS cellar_moves (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id int NOT NULL, wine_id int NOT NULL, moved_at timestamptz NOT NULL,
    bottles int NOT NULL  -- > 0 in, < 0 out
);
CREATE TABLE IF NOT EXISTS email_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id int, subject text, sent_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS email_log_sent_at ON email_log (sent_at);
CREATE TABLE IF NOT EXISTS activity_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id int, action text, at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_log_at ON activity_log (at);
-- no primary key: cleanup deletes its rows by ctid ranges
CREATE TABLE IF NOT EXISTS api_usage (endpoint text, ms int, at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS api_usage_at ON api_usage (at);
CREATE TABLE IF NOT EXISTS cache (key text PRIMARY KEY, value text, expires_at timestamptz);
"""

APP_ROWS = """
SELECT setseed(0.42);
INSERT INTO users
SELECT g, 'user' || g || '@example.org',
       (ARRAY['Ann','Bob','Cy','Dee','Eli','Fay','Gus','Hal','Ida','Jo'])[1 + mod(g - 1, 10)]
           || ' ' || chr(64 + g),
       mod(g, 4) <> 0
FROM generate_series(1, 12) g;
INSERT INTO wines
SELECT g, (ARRAY['Barolo','Rioja Reserva','Chablis','Chianti Classico','Pomerol',
                 'Riesling Spätlese','Malbec','Sancerre'])[1 + mod(g - 1, 8)],
       2005 + g, current_date - (400 - g * 40), current_date + g * 200
FROM generate_series(1, 8) g;
INSERT INTO cellar_moves (user_id, wine_id, moved_at, bottles)
SELECT 1 + floor(random() * 12)::int, 1 + floor(random() * 8)::int,
       now() - random() * interval '400 days',
       CASE WHEN random() < 0.7 THEN 1 + floor(random() * 6)::int ELSE -1 END
FROM generate_series(1, 1500);
INSERT INTO email_log (user_id, subject, sent_at)
SELECT 1 + mod(g, 12), 'weekly', now() - random() * interval '400 days'
FROM generate_series(1, 4000) g;
INSERT INTO activity_log (user_id, action, at)
SELECT 1 + mod(g, 12), (ARRAY['login','add','drink','rate'])[1 + mod(g, 4)],
       now() - random() * interval '400 days'
FROM generate_series(1, 6000) g;
INSERT INTO api_usage
SELECT '/api/v1/' || (ARRAY['wines','cellar','search'])[1 + mod(g, 3)], 5 + mod(g, 200),
       now() - random() * interval '60 days'
FROM generate_series(1, 9000) g;
INSERT INTO cache
SELECT 'k' || g, 'v', now() + (random() - 0.5) * interval '4 days'
FROM generate_series(1, 400) g;
"""


@jobctl.job("seed_app", description="Creates the example application's tables and rows")
def seed_app(ctx: jobctl.RunContext) -> jobctl.Counters:
    ctx.conn.exec_driver_sql(APP_SCHEMA)
    if ctx.conn.execute(text("SELECT count(*) FROM users")).scalar_one():
        ctx.log.info("the example application's tables are there already")
        return jobctl.Counters(unchanged=1)
    ctx.conn.exec_driver_sql(APP_ROWS)
    counts = {
        table: ctx.conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in ("users", "cellar_moves", "email_log", "activity_log", "api_usage", "cache")
    }
    ctx.stats["rows"] = counts
    ctx.log.info("created %s", ", ".join(f"{n} {t}" for t, n in counts.items()))
    return jobctl.Counters(total=sum(counts.values()), new=sum(counts.values()))
