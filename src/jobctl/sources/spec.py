"""``[sources.NAME]`` tables of ``jobctl.toml``: the model lives in :mod:`jobctl.config_models`.

The configuration is read (and every source checked) without importing this
package, so a skipped timer tick stays light; the names stay importable from here.

::

    [sources.permits]
    url = "https://data.example.org/permits.json?token=${FEED_TOKEN}"   # or path = "..."
    # or query = "SELECT ... WHERE created_at >= :date AND created_at < :date + 1"
    # database_url = "${OTHER_DB}"   # query: another database (default: jobctl's)
    format = "json"            # json | ndjson | csv | json-object
    record_path = "item"       # json: where the records are ("item" = top-level array)
    key = ["PERMIT_NUM", "REVISION_NUM"]
    table = "permits"          # target table (optionally schema.table)
    complete = true            # absent records get removed_at
    date = "today"             # default --date: today | yesterday
    fields = { permit_num = "PERMIT_NUM" }   # optional selection / renaming
    exclude = ["", "_id"]      # or: drop volatile columns (exclusive with fields)
    types = { est_cost = "float" }
    headers = { Accept = "application/json" }
    token = "${FEED_TOKEN}"    # sent as Authorization: Bearer …
    timeout = "60s"
    retries = 3
    max_error_ratio = 0.01
    max_removed_ratio = 0.5    # refuse to mark more than half the table removed
    error_when = { result = "error" }   # json / json-object: an error inside HTTP 200
    error_message = "message"
    retry_on_error_body = false
"""

from jobctl.config_models import Check, SourceConfig, parse_sources

__all__ = ["Check", "SourceConfig", "parse_sources"]
