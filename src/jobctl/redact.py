"""Remove credentials from URLs, DSNs and free text before they are shown or stored.

Everything that jobctl prints, logs or writes to the run ledger (``runs.source``,
``error_message``, ``error_detail``) and that may contain a feed URL, a database URL or
a token goes through one of these functions first.

* :func:`redact_url` — ``scheme://user:***@host/path?token=***&page=2``: the userinfo
  password and the values of query (and fragment) parameters whose *name* looks secret
  are replaced with ``***``; everything else is kept byte for byte, so the result is
  still useful for an operator. A user name without a password is kept (``postgres@``).
* :func:`redact_dsn` — PostgreSQL URLs (as above, ``?password=`` included) and libpq
  ``key=value`` strings (``password=***``).
* :func:`redact_text` — replaces every occurrence of known secret values (len >= 4) and
  redacts every URL found in the text.

None of them raises, whatever the input: a redaction helper that can fail would turn a
harmless error report into a crash, or worse, into the unredacted original being logged
by a fallback handler.

Known limit: a password containing an unencoded ``/``, ``?`` or ``#`` cannot be told
apart from the path (RFC 3986 forbids it; libpq and httpx reject it too) — pass such
secrets to :func:`redact_text` explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

__all__ = ["MASK", "is_secret_name", "redact_dsn", "redact_text", "redact_url"]

MASK = "***"

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


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace each secret (non-empty, at least 4 characters) and redact every URL in ``text``.

    Secrets shorter than 4 characters are ignored: masking every ``"ab"`` in a message
    would destroy it while protecting nothing worth protecting.
    """
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:
            return "<unprintable text>"
    try:
        # longest first, so a secret that contains another is masked as a whole
        for secret in sorted({s for s in secrets if isinstance(s, str)}, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_IN_TEXT.sub(lambda m: _redact_url(m.group(0)), text)
        if "password" in text.lower():
            text = _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
        return text
    except Exception:  # pragma: no cover - defensive
        return "<unprintable text>"
