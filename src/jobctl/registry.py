"""Job specs: jobctl's built-in jobs plus those registered by the user's module."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jobctl.errors import ConfigError, UsageError

JobFunction = Callable[..., Any]


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: JobFunction
    description: str = ""
    builtin: bool = False
    #: True when the job's work depends on the date (catch-up ``all`` allowed).
    date_based: bool = False
    #: The date (``partition``) a run serving a slot works on; a completed run with that
    #: partition covers the slot too (e.g. ``jobctl snapshot --date D`` run by hand).
    served_date: Callable[[Any, datetime], date | None] | None = None


_USER_JOBS: dict[str, JobSpec] = {}


def job(
    name: str | None = None, *, description: str | None = None, date_based: bool = False
) -> Callable[[JobFunction], JobFunction]:
    """Register a function as a job: ``@jobctl.job("weekly_reports")``.

    The function receives a :class:`jobctl.RunContext`; it may return ``None``,
    a :class:`jobctl.Counters` or a mapping of counter names to numbers. An
    exception fails the run; a :class:`jobctl.TransientError` is retried.
    """

    def register(fn: JobFunction) -> JobFunction:
        job_name = name or fn.__name__
        doc = description or (fn.__doc__ or "").strip().split("\n", 1)[0]
        _USER_JOBS[job_name] = JobSpec(job_name, fn, doc, builtin=False, date_based=date_based)
        return fn

    return register


def builtin_jobs() -> dict[str, JobSpec]:
    """Built-in jobs that exist in this version (imported lazily: start-up stays fast)."""
    specs: dict[str, JobSpec] = {}
    for module_name in ("sync", "snapshot", "backfill", "cleanup", "report"):
        try:
            module = importlib.import_module(f"jobctl.jobs.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"jobctl.jobs.{module_name}":
                continue
            raise
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, JobSpec):
            specs[spec.name] = spec
    return specs


def load_user_jobs(module: str | None, base: Path) -> dict[str, JobSpec]:
    """Import the user's jobs module (``pkg.mod`` or ``path/to/file.py``)."""
    if not module:
        return {}
    before = dict(_USER_JOBS)
    _USER_JOBS.clear()
    try:
        if module.endswith(".py") or "/" in module:
            path = (base / module).resolve()
            if not path.is_file():
                raise ConfigError(f"file {str(path)!r} does not exist", key="jobs_module")
            mod_name = "jobctl_user_jobs_" + path.stem
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot import {str(path)!r}", key="jobs_module")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
        else:
            if str(base) not in sys.path:
                sys.path.insert(0, str(base))
            if module in sys.modules:
                importlib.reload(sys.modules[module])
            else:
                importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"module {module!r} cannot be imported ({exc}); check jobs_module and jobs_path",
            key="jobs_module",
        ) from None
    except SyntaxError as exc:
        raise ConfigError(
            f"module {module!r} has a syntax error at line {exc.lineno}: {exc.msg}",
            key="jobs_module",
        ) from None
    except ConfigError:
        raise
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ConfigError(
            f"module {module!r} failed while being imported: {type(exc).__name__}: {exc}",
            key="jobs_module",
        ) from None
    found = dict(_USER_JOBS)
    _USER_JOBS.clear()
    _USER_JOBS.update(before)
    return found


def all_jobs(module: str | None, base: Path) -> dict[str, JobSpec]:
    jobs = builtin_jobs()
    for name, spec in load_user_jobs(module, base).items():
        if name in jobs:
            raise ConfigError(
                f"user job {name!r} has the name of a built-in job", key="jobs_module"
            )
        jobs[name] = spec
    return jobs


def resolve(name: str, jobs: Mapping[str, JobSpec], configured: Mapping[str, Any]) -> JobSpec:
    if name in jobs:
        return jobs[name]
    known = sorted(jobs)
    hint = f" (known jobs: {', '.join(known)})" if known else " (no jobs are registered)"
    if name in configured:
        raise UsageError(
            f"job {name!r} is configured but no code registers it; check jobs_module{hint}"
        )
    raise UsageError(f"unknown job {name!r}{hint}")
