"""The architecture habits, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "jobctl"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_only_cli_imports_typer_and_rich() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in modules()
        if {"typer", "rich", "click"} & imports_of(p) and p.parent.name != "cli"
    ]
    assert offenders == []


def test_only_db_imports_psycopg() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in modules()
        if "psycopg" in imports_of(p) and p.parent.name != "db"
    ]
    assert offenders == []


def test_only_sources_http_imports_httpx() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in modules()
        if "httpx" in imports_of(p) and p.name != "http.py"
    ]
    assert offenders == []


def test_only_config_reads_the_environment() -> None:
    offenders = []
    for path in modules():
        text = path.read_text()
        if ("os.environ" in text or "os.getenv" in text) and path.name != "config.py":
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_only_the_ledger_writes_runs() -> None:
    writers = [
        str(p.relative_to(SRC))
        for p in modules()
        if any(
            w in p.read_text()
            for w in (
                "INSERT INTO jobctl.runs",
                "UPDATE jobctl.runs",
                "runs.insert(",
                "update(runs)",
            )
        )
    ]
    assert writers == ["db/ledger.py"]


def test_jobs_never_print() -> None:
    offenders = []
    for path in modules():
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def full_imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name (type-only imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_jobs_reach_the_runner_and_the_ledger_through_their_context_only() -> None:
    """A job sees ``jobctl.jobspec`` and its ``RunContext``: it starts children with
    ``ctx.run_child`` and asks the ledger through context methods."""
    forbidden = ("jobctl.runner", "jobctl.db.ledger", "jobctl.db.locks", "jobctl.registry")
    offenders = {
        str(p.relative_to(SRC)): sorted(
            m for m in full_imports_of(p) if any(m == f or m.startswith(f + ".") for f in forbidden)
        )
        for p in sorted((SRC / "jobs").rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_contract_module_stays_light() -> None:
    """``jobctl.jobspec`` is imported by every job and a skipped tick: only the
    standard library and ``jobctl.errors`` at run time."""
    tree = ast.parse((SRC / "jobspec.py").read_text())
    runtime = set()
    for node in tree.body:  # module level, outside ``if TYPE_CHECKING:``
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jobctl"):
            runtime.add(node.module)
        elif isinstance(node, ast.Import):
            runtime.update(a.name for a in node.names if a.name.startswith("jobctl"))
    assert runtime <= {"jobctl.errors"}


def _full_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_web_imports_fastapi_and_web_is_not_a_cli_client() -> None:
    """The web console is a face beside the CLI: it calls the library, never jobctl.cli,
    and nothing else pulls in its server packages (the core CLI does not grow)."""
    server = {"fastapi", "starlette", "uvicorn", "multipart"}
    outside = [
        str(p.relative_to(SRC))
        for p in modules()
        if server & imports_of(p) and p.relative_to(SRC).parts[0] != "web"
    ]
    assert outside == []
    web = sorted((SRC / "web").rglob("*.py"))
    assert web
    uses_cli = [
        str(p.relative_to(SRC))
        for p in web
        if any(m == "jobctl.cli" or m.startswith("jobctl.cli.") for m in _full_imports(p))
    ]
    assert uses_cli == []
