"""jobctl: run recurring data jobs safely, visibly and repeatably against PostgreSQL.

The public API for user jobs::

    import jobctl

    @jobctl.job("weekly_reports")
    def weekly_reports(ctx: jobctl.RunContext) -> jobctl.Counters:
        rows = ctx.conn.execute(sqlalchemy.text("SELECT ...")).all()
        ctx.log.info("built %d reports", len(rows))
        return jobctl.Counters(total=len(rows), new=len(rows))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Counters", "JobError", "RunContext", "TransientError", "__version__", "job"]

if TYPE_CHECKING:
    from jobctl.context import Counters, RunContext
    from jobctl.errors import JobError, TransientError
    from jobctl.registry import job


def __getattr__(name: str) -> Any:
    # Lazy: `jobctl --version` and the CLI's start-up should not import SQLAlchemy.
    if name in ("Counters", "RunContext"):
        from jobctl import context

        return getattr(context, name)
    if name in ("JobError", "TransientError"):
        from jobctl import errors

        return getattr(errors, name)
    if name == "job":
        from jobctl.registry import job

        return job
    raise AttributeError(name)
