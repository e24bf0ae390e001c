"""Every command has help text and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import typer

from jobctl.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def commands() -> list[tuple[str, object]]:
    group = typer.main.get_command(app)
    found = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            found += [(f"{name} {s}", c) for s, c in sub.items()]
        else:
            found.append((name, cmd))
    return found


def test_every_command_has_help() -> None:
    missing = [name for name, cmd in commands() if not (getattr(cmd, "help", "") or "").strip()]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    names = [name for name, _ in commands()]
    assert len(names) >= 9
    missing = [name for name in names if f"jobctl {name}" not in README]
    assert missing == []
