"""The text of a SQL source's query: its ``:name`` parameters and first keyword.

Light on purpose (``re`` and ``dataclasses`` only): the configuration checks every
``[sources.NAME] query`` when it is read, and reading the configuration must not
import the ``jobctl.sources`` package (see tests/test_startup.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BOUND", "READ_KEYWORDS", "ParsedQuery", "condition_problem", "parse_query"]

#: The statements a query source may start with: the ones that only read.
READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE")
#: The parameters jobctl binds. ``:date`` is the sync's date.
BOUND = ("date",)

_IDENT_START = re.compile(r"[A-Za-z_]")
_IDENT = re.compile(r"\w+")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class ParsedQuery:
    """A query in psycopg's placeholder style, the ``:name`` parameters it uses, and its
    first keyword (upper case)."""

    text: str
    params: tuple[str, ...]
    first_word: str


def parse_query(query: str) -> ParsedQuery:
    """``:date`` → ``%(date)s`` (and ``%`` → ``%%``), outside string literals, quoted
    identifiers, dollar quotes and comments; ``::`` casts and ``a[lo:hi]`` slices are left
    alone. Trailing semicolons are dropped (one statement only).

    >>> parse_query("SELECT * FROM t WHERE d = :date::date AND s LIKE 'a%:x'").text
    "SELECT * FROM t WHERE d = %(date)s::date AND s LIKE 'a%%:x'"
    """
    out: list[str] = []
    params: list[str] = []
    first_word = ""
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if (j := _opaque_end(query, i)) is not None:
            # Text the server reads as data or comment: no parameters in it, but its
            # ``%`` still reaches psycopg, which would take it for a placeholder.
            out.append(query[i:j].replace("%", "%%"))
            i = j
        elif query.startswith("::", i):
            out.append("::")
            i += 2
        elif (
            c == ":"
            and i + 1 < n
            and _IDENT_START.match(query[i + 1])
            and not _word_before(query, i)
        ):
            name = _IDENT.match(query, i + 1)
            assert name is not None
            params.append(name.group(0))
            out.append(f"%({name.group(0)})s")
            i = name.end()
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            if not first_word and (word := _WORD.match(query, i)) and not _word_before(query, i):
                first_word = word.group(0).upper()
                out.append(word.group(0))
                i = word.end()
                continue
            out.append(c)
            i += 1
    text = "".join(out).rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return ParsedQuery(text, tuple(dict.fromkeys(params)), first_word)


def condition_problem(condition: str) -> str | None:
    """Why ``condition`` cannot be ANDed as one SQL condition (None: it can).

    A cleanup policy's ``where`` is pasted inside ``AND (...)``: a ``;`` would start
    another statement (run too: psycopg sends a statement without parameters as
    a simple query), and a ``)`` closing more than it opened would escape the
    parentheses and change what the age test guards. Literals, quoted identifiers
    and comments are skipped.
    """
    depth, i, n = 0, 0, len(condition)
    while i < n:
        if (j := _opaque_end(condition, i)) is not None:
            i = j
            continue
        c = condition[i]
        if c == ";":
            return "holds ';': give one condition, not statements"
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return "closes a parenthesis it did not open"
        i += 1
    return "leaves a parenthesis open" if depth else None


def _opaque_end(query: str, i: int) -> int | None:
    """Where the literal, quoted identifier, comment or dollar quote at ``i`` ends.

    None when none starts at ``i``. An unterminated one runs to the end of the query
    (the server then reports the error, with its own position).
    """
    c = query[i]
    if c == "'" or c == '"':
        return _quoted_end(query, i)
    if query.startswith("--", i):
        j = query.find("\n", i)
        return len(query) if j < 0 else j
    if query.startswith("/*", i):
        return _block_comment_end(query, i)
    if c == "$" and (tag := _DOLLAR_TAG.match(query, i)) and not _word_before(query, i):
        end = query.find(tag.group(0), tag.end())
        return len(query) if end < 0 else end + len(tag.group(0))
    return None


def _quoted_end(query: str, i: int) -> int:
    """The end of a literal or quoted identifier: ``''`` / ``""`` escape the quote,
    and in an ``E'...'`` literal a backslash escapes the next character."""
    c, n = query[i], len(query)
    escapes = c == "'" and i > 0 and query[i - 1] in "eE" and not _word_before(query, i - 1)
    j = i + 1
    while j < n:
        if escapes and query[j] == "\\":
            j += 2
            continue
        if query[j] == c:
            if j + 1 < n and query[j + 1] == c:
                j += 2
                continue
            break
        j += 1
    return j + 1


def _block_comment_end(query: str, i: int) -> int:
    """The end of a ``/* ... */`` comment; PostgreSQL's nest."""
    depth, j, n = 1, i + 2, len(query)
    while j < n and depth:
        if query.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif query.startswith("*/", j):
            depth, j = depth - 1, j + 2
        else:
            j += 1
    return j


def _word_before(query: str, i: int) -> bool:
    return i > 0 and (query[i - 1].isalnum() or query[i - 1] in "_$")
