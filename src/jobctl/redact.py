"""Remove credentials from URLs, DSNs and free text before they are shown or stored.

Everything that jobctl prints, logs or writes to the run ledger goes through one
:class:`Redactor`, built from every secret value jobctl knows (the ``${NAME}`` values of
the configuration, the database URL's password, HTTP source tokens): the stderr log
handler (text and JSON), the run's stored log tail, error messages, the run row's
``error_message`` / ``error_detail`` / ``source``, and ``runs show`` / ``runs list``.

* :class:`Redactor` — replaces every known secret value with ``***`` wherever it
  appears, in each of the forms it may take: as given, percent-decoded
  (``p%40ss`` → ``p@ss``), percent-encoded, and escaped as in ``repr()`` and JSON; then
  applies :func:`redact_text`. Values of 4 characters or more are replaced wherever
  they occur, even inside a word. **Shorter values (1–3 characters) are replaced only
  as whole tokens**, i.e. where the characters just before and after them are not
  word characters (letters, digits, ``_``): a 3-character password ``p@x`` is masked
  in ``u:p@x@host`` and in ``password was p@x.``, but ``ab`` is not masked inside
  ``table``; masking every substring would destroy messages without protecting a
  value that short.
* :func:`redact_url` — ``scheme://user:***@host/path?token=***&page=2``: the userinfo
  password and the values of query (and fragment) parameters whose *name* looks secret
  are replaced with ``***``; everything else is kept byte for byte, so the result is
  still useful for an operator. A user name without a password is kept (``postgres@``).
* :func:`redact_dsn` — PostgreSQL URLs (as above, ``?password=`` included) and libpq
  ``key=value`` strings (``password=***``).
* :func:`redact_text` — redacts every URL and libpq password found in the text (and
  the given secret values, as a :class:`Redactor` does).
* :func:`url_secrets` — the secret values a URL carries (password, secret-named query
  values), as written and percent-decoded, to build a :class:`Redactor` from.

None of them raises, whatever the input: a redaction helper that can fail would turn a
harmless error report into a crash, or worse, into the unredacted original being logged
by a fallback handler.

Known limit: a password containing an unencoded ``/``, ``?`` or ``#`` cannot be told
apart from the path (RFC 3986 forbids it; libpq and httpx reject it too) — pass such
secrets to a :class:`Redactor` explicitly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

__all__ = [
    "MASK",
    "SHORT_SECRET",
    "Redactor",
    "is_secret_header",
    "is_secret_name",
    "redact_dsn",
    "redact_text",
    "redact_url",
    "url_secrets",
]

MASK = "***"

#: secret values shorter than this are masked as whole tokens only (see the docstring)
SHORT_SECRET = 4

#: exact parameter names (compared lower-cased, '-' read as '_')
_SECRET_NAMES = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "auth",
        "sig",
        "signature",
        "token_auth",  # Matomo
        "private_token",  # GitLab
        "x_amz_credential",
        "x_amz_security_token",
        "sessionid",
        "session",
    }
)
#: substrings that make any parameter name secret (``x_api_key``, ``X-Amz-Signature``)
_SECRET_PARTS = ("token", "secret", "password", "passwd", "api_key", "apikey", "signature")

#: a URL inside free text: scheme://… up to whitespace or a quote/bracket that ends it
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>`]+""")

#: libpq key=value password (value bare or single-quoted with backslash escapes)
#: (not preceded by ?, & or ; — URL query parameters are handled by the URL redaction)
_DSN_PASSWORD = re.compile(
    r"""(?i)(?<![?&;\w])(\w*(?:password|passwd)\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)"""
)


def is_secret_name(name: str) -> bool:
    """True when a query/config parameter called ``name`` probably holds a credential."""
    try:
        norm = unquote_plus(name).strip().lower().replace("-", "_")
    except Exception:  # pragma: no cover - unquote_plus does not raise on str
        norm = name.lower()
    if norm in _SECRET_NAMES:
        return True
    return any(part in norm for part in _SECRET_PARTS)


def is_secret_header(name: str) -> bool:
    """True for an HTTP header that carries a credential (``Authorization``, ``X-Api-Key``)."""
    lname = name.strip().lower()
    return lname in ("authorization", "proxy-authorization", "cookie") or is_secret_name(lname)


def _redact_params(params: str) -> str:
    """Redact ``a=1&token=x;b=2``-style parameter strings, keeping the original encoding."""
    if "=" not in params:
        return params
    out: list[str] = []
    for part in re.split(r"([&;])", params):
        if part in ("&", ";"):
            out.append(part)
            continue
        name, eq, value = part.partition("=")
        if eq and value and is_secret_name(name):
            out.append(f"{name}={MASK}")
        else:
            out.append(part)
    return "".join(out)


def _redact_url(url: str) -> str:
    before_frag, hash_sign, fragment = url.partition("#")
    base, qmark, query = before_frag.partition("?")
    scheme, sep, rest = base.partition("://")
    if sep:
        # authority ends at the first '/', the userinfo at the last '@' inside it
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            userinfo, _, hostport = authority.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            if colon:
                userinfo = f"{user}:{MASK}"
            authority = f"{userinfo}@{hostport}"
        base = f"{scheme}{sep}{authority}{slash}{path}"
    if qmark:
        query = _redact_params(query)
    if hash_sign:
        # OAuth implicit flow puts access_token=… in the fragment
        fragment = _redact_params(fragment)
    return f"{base}{qmark}{query}{hash_sign}{fragment}"


def redact_url(url: str) -> str:
    """Return ``url`` with its password and secret-looking query values replaced by ``***``.

    >>> redact_url("https://bob:hunter2@example.org/a?token_auth=abc&period=day")
    'https://bob:***@example.org/a?token_auth=***&period=day'
    """
    if not isinstance(url, str):
        try:
            url = str(url)
        except Exception:
            return "<unprintable url>"
    try:
        return _redact_url(url)
    except Exception:  # pragma: no cover - defensive: string ops only
        # Never fall back to the original: keep only what cannot hold a credential.
        head = url.split("?", 1)[0].split("#", 1)[0]
        head = re.sub(r"://[^/@]*@", f"://{MASK}@", head)
        return head + ("?***" if "?" in url else "")


def redact_dsn(dsn: str) -> str:
    """Redact a PostgreSQL connection string: URL form or libpq ``key=value`` form.

    >>> redact_dsn("postgresql://app:s3cret@db:5432/app?sslmode=require")
    'postgresql://app:***@db:5432/app?sslmode=require'
    >>> redact_dsn("host=db user=app password='two words' dbname=app")
    'host=db user=app password=*** dbname=app'
    """
    if not isinstance(dsn, str):
        dsn = redact_url(dsn)
        return dsn
    try:
        if "://" in dsn:
            return redact_url(dsn)
        return _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, dsn)
    except Exception:  # pragma: no cover - defensive
        return "<unprintable dsn>"


def url_secrets(url: str | None) -> list[str]:
    """The credentials ``url`` carries, as written and percent-decoded.

    The userinfo password and the values of secret-named query/fragment parameters:
    ``postgresql://u:p%40ss@h/db`` gives ``["p%40ss", "p@ss"]``. Never raises.
    """
    if not url or not isinstance(url, str):
        return []
    found: list[str] = []
    try:
        parts = urlsplit(url)
        password = parts.password
        if password:
            found += [password, unquote(password)]
        for chunk in (parts.query, parts.fragment):
            for pair in re.split(r"[&;]", chunk):
                name, eq, value = pair.partition("=")
                if eq and value and is_secret_name(name):
                    found += [value, unquote_plus(value)]
    except ValueError:  # a malformed URL (e.g. an unclosed IPv6 bracket)
        # Fall back to the raw userinfo, so that a bad URL's password is still known.
        match = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)@", url)
        password = match.group(1).partition(":")[2] if match else ""
        if password:
            found += [password, unquote(password)]
    return list(dict.fromkeys(s for s in found if s))


def _forms(secret: str) -> set[str]:
    """The ways ``secret`` may be written in a message, a URL, a traceback or JSON."""
    forms = {secret, unquote(secret), quote(secret, safe=""), quote_plus(secret, safe="")}
    forms.add(repr(secret)[1:-1])
    forms.add(json.dumps(secret)[1:-1])
    return {f for f in forms if f}


class Redactor:
    """Masks a fixed set of secret values (and every URL credential) in text and data.

    One is built per invocation from every secret the settings know and applied to each
    output path; iterating over it yields the values it masks (every form of them).
    Values of :data:`SHORT_SECRET` characters or more are masked wherever they occur;
    shorter ones only as whole tokens (not preceded or followed by a word character).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and secret:
                values |= _forms(secret)
        # Longest first, so that a secret containing another is masked as a whole.
        self._values = sorted(values, key=lambda v: (-len(v), v))
        self._steps: list[str | re.Pattern[str]] = [
            v if len(v) >= SHORT_SECRET else re.compile(rf"(?<!\w){re.escape(v)}(?!\w)")
            for v in self._values
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __repr__(self) -> str:  # never the values themselves
        return f"<Redactor of {len(self._values)} value(s)>"

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also masks ``secrets``."""
        return Redactor([*self._values, *secrets])

    def _values_only(self, text: str) -> str:
        for step in self._steps:
            if isinstance(step, str):
                if step in text:
                    text = text.replace(step, MASK)
            else:
                text = step.sub(MASK, text)
        return text

    def text(self, text: str) -> str:
        """``text`` with every known secret value and every URL credential masked."""
        if not isinstance(text, str):
            try:
                text = str(text)
            except Exception:
                return "<unprintable text>"
        try:
            text = self._values_only(text)
            if "://" in text:
                text = _URL_IN_TEXT.sub(lambda m: _redact_url(m.group(0)), text)
            if "password" in text.lower():
                text = _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
            return text
        except Exception:  # pragma: no cover - defensive
            return "<unprintable text>"

    __call__ = text

    def url(self, url: str) -> str:
        """:func:`redact_url` of ``url``, with known secret values masked anywhere in it
        (a ``${TOKEN}`` in a path segment as well as in ``?token=``)."""
        try:
            return self._values_only(redact_url(url))
        except Exception:  # pragma: no cover - defensive
            return "<unprintable url>"

    def data(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every URL and libpq password in ``text``, and mask the given secret values.

    The same as ``Redactor(secrets).text(text)``: values shorter than
    :data:`SHORT_SECRET` characters are masked as whole tokens only.
    """
    return Redactor(secrets).text(text)
