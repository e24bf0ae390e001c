"""The console's security pieces on their own: tokens, session cookies, CSRF, redirects."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobctl.config_web import WebConfig, WebToken, is_loopback, read_tokens
from jobctl.errors import ConfigError
from jobctl.web.login import safe_next
from jobctl.web.security import Guard

ALICE = WebToken("alice", "a" * 20)
BOB = WebToken("bob", "b" * 20)


def guard(*tokens: WebToken, host: str = "127.0.0.1") -> Guard:
    return Guard(WebConfig(host=host, tokens=tokens))


def test_bearer_secrets_name_their_token() -> None:
    both = guard(ALICE, BOB)
    assert both.check_bearer("b" * 20).name == "bob"  # type: ignore[union-attr]
    assert both.check_bearer("a" * 19) is None
    assert both.check_bearer("") is None
    assert both.check_bearer("a" * 20 + " ") is None


def test_a_session_is_signed_expires_and_ends_with_its_token() -> None:
    both = guard(ALICE, BOB)
    cookie = both.new_session("alice", now=1000.0)
    assert both.check_session(cookie, now=1001.0).name == "alice"  # type: ignore[union-attr]
    assert both.check_session(cookie, now=1000.0 + 13 * 3600) is None  # expired
    _, expires, signature = cookie.split("~")
    assert both.check_session(f"bob~{expires}~{signature}", now=1001.0) is None
    assert both.check_session(f"alice~{int(expires) + 9999}~{signature}", now=1001.0) is None
    assert both.check_session(cookie + "~x", now=1001.0) is None
    # Another secret for alice (the token changed): her sessions are over.
    changed = guard(WebToken("alice", "z" * 20), BOB)
    assert changed.check_session(cookie, now=1001.0) is None
    # A restart with the same tokens keeps them.
    assert guard(ALICE, BOB).check_session(cookie, now=1001.0) is not None


def test_csrf_tokens_belong_to_their_session() -> None:
    server = guard(ALICE, BOB)
    alice = server.new_session("alice")
    bob = server.new_session("bob")
    assert server.csrf_for(alice) == server.csrf_for(alice)
    assert server.csrf_for(alice) != server.csrf_for(bob)
    assert server.csrf_for(None) not in (server.csrf_for(alice), server.csrf_for(bob))
    assert server.csrf_for("forged~1~2") == server.csrf_for(None)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/runs?job=sync", "/runs?job=sync"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_redirects_stay_on_this_server(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tokens_from_the_variable_and_the_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# who\n\nbob:{'b' * 20}\n carol : {'c' * 20} \n")
    env = {"JOBCTL_WEB_TOKEN": "a" * 20, "JOBCTL_WEB_TOKEN_FILE": str(file)}
    tokens = read_tokens(env, {})
    assert [(t.name, t.secret) for t in tokens] == [
        ("web", "a" * 20),
        ("bob", "b" * 20),
        ("carol", "c" * 20),
    ]
    assert "a" * 20 not in repr(tokens)
    file.write_text(f"{'d' * 20}\n")
    with pytest.raises(ConfigError, match="line 1: write each token as name:secret"):
        read_tokens({"JOBCTL_WEB_TOKEN_FILE": str(file)}, {})
    file.write_text(f"bob:{'y' * 20}\n")
    with pytest.raises(ConfigError, match="given twice"):
        read_tokens({"JOBCTL_WEB_TOKEN": f"bob:{'x' * 20}", "JOBCTL_WEB_TOKEN_FILE": str(file)}, {})
    with pytest.raises(ConfigError, match="may hold letters"):
        read_tokens({"JOBCTL_WEB_TOKEN": f"bo b:{'x' * 20}"}, {})
