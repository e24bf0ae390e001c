"""``KEY=VALUE`` parameters, as ``--param`` takes them on the command line and the web
console's schedule form takes them one a line: one parser, one set of messages."""

from __future__ import annotations

from collections.abc import Iterable

from jobctl.durations import shown
from jobctl.errors import UsageError
from jobctl.when import is_utf8


def parse_params(items: Iterable[str] | None) -> dict[str, str]:
    """``--param KEY=VALUE`` items → a dict (a later KEY wins). The value may be empty
    and may itself hold ``=``; the key is stripped and must not be empty. Both must be
    text that can be stored: no NUL, no bytes that are not UTF-8 (which a shell hands
    over as lone surrogates)."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {shown(item)} is not KEY=VALUE")
        if "\x00" in item or not is_utf8(item):
            raise UsageError(f"--param {shown(item)} is not valid UTF-8 text without NUL")
        params[key.strip()] = value
    return params


__all__ = ["parse_params"]
