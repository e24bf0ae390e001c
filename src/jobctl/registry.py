"""Job specs: jobctl's built-in jobs plus those registered by the user's module."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobctl.errors import ConfigError, UsageError
from jobctl.jobspec import JobSpec, user_job_spec

if TYPE_CHECKING:
    from jobctl.config import Settings

JobFunction = Callable[..., Any]
#: A job of any arguments and plan: the registry holds them side by side.
AnyJob = JobSpec[Any, Any]


_USER_JOBS: dict[str, AnyJob] = {}


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
        _USER_JOBS[job_name] = user_job_spec(job_name, fn, doc, date_based=date_based)
        return fn

    return register


#: The modules of ``jobctl.jobs`` that may hold a built-in job (its ``SPEC``), each
#: named as its job; those that do not exist in this version are left out.
BUILTIN_MODULES = ("sync", "snapshot", "backfill", "cleanup", "report")


class Jobs(Mapping[str, AnyJob]):
    """Job specs by name. A built-in job's module is imported when its spec is first
    read, not when the jobs are listed: ``jobctl run NAME`` on a user's job (a cron
    tick that may well be skipped) does not import the sync job's parsers or the
    snapshot job's SQL."""

    def __init__(self, builtin: Sequence[str], user: Mapping[str, AnyJob]) -> None:
        self._names = [*builtin, *user]
        self._specs: dict[str, AnyJob] = dict(user)

    def __getitem__(self, name: str) -> AnyJob:
        if name not in self._specs:
            if name not in self._names:
                raise KeyError(name)
            self._specs[name] = _builtin_spec(name)
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def builtin_names() -> list[str]:
    """The built-in jobs of this version (found without importing their modules)."""
    return [m for m in BUILTIN_MODULES if importlib.util.find_spec(f"jobctl.jobs.{m}")]


def _builtin_spec(name: str) -> AnyJob:
    spec = getattr(importlib.import_module(f"jobctl.jobs.{name}"), "SPEC", None)
    if not isinstance(spec, JobSpec) or spec.name != name:
        raise RuntimeError(f"jobctl.jobs.{name} must define SPEC, a JobSpec named {name!r}")
    return spec


def builtin_jobs() -> Jobs:
    """Built-in jobs that exist in this version (imported lazily: start-up stays fast)."""
    return Jobs(builtin_names(), {})


def load_user_jobs(module: str | None, base: Path) -> dict[str, AnyJob]:
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


def all_jobs(module: str | None, base: Path) -> Jobs:
    builtin = builtin_names()
    user = load_user_jobs(module, base)
    for name in user:
        if name in builtin:
            raise ConfigError(
                f"user job {name!r} has the name of a built-in job", key="jobs_module"
            )
    return Jobs(builtin, user)


def resolve(
    name: str,
    jobs: Mapping[str, AnyJob],
    configured: Mapping[str, Any],
    *,
    no_config: str | None = None,
) -> AnyJob:
    """The job called ``name``; ``no_config``: where a config file was looked for, in vain."""
    if name in jobs:
        return jobs[name]
    known = sorted(jobs)
    hint = f" (known jobs: {', '.join(known)})" if known else " (no jobs are registered)"
    if no_config is not None:
        # A user's jobs come from the jobs_module the config names: without the file
        # the cause is the missing file, not the job.
        hint += (
            f"; no config file: looked for {no_config} (set --config or JOBCTL_CONFIG), "
            "whose jobs_module names the module with your jobs"
        )
    if name in configured:
        raise UsageError(
            f"job {name!r} is configured but no code registers it; check jobs_module{hint}"
        )
    raise UsageError(f"unknown job {name!r}{hint}")


def resolve_job(name: str, jobs: Mapping[str, AnyJob], settings: Settings) -> AnyJob:
    """The job called ``name`` among ``jobs``, as configured in ``settings``."""
    no_config = None
    if settings.config_path is None:
        no_config = str(settings.looked_for or "jobctl.toml")
    return resolve(name, jobs, settings.jobs, no_config=no_config)
