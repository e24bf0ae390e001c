"""A real SMTP server (aiosmtpd) on 127.0.0.1 for alert tests."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.fixtures.httpserver import local_http_server  # noqa: F401 - the fixture, for these tests

USER = "alerts"
PASSWORD = "sm7p-pa55word"


def free_port() -> int:
    # Controller(port=0) fails: its readiness probe dials the port it was given.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mailbox:
    """What the server received: each message, and the logins it saw."""

    port: int
    messages: list[Message] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        self.raw.append(content)
        self.messages.append(message_from_bytes(content))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            self.logins.append(USER)
            return AuthResult(success=True)
        # handled=False, or the client hangs waiting for a reply (VALIDATORS.md)
        return AuthResult(success=False, handled=False)

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@contextmanager
def plain_server(box: Mailbox) -> Iterator[Mailbox]:
    """``box`` served over plain SMTP, AUTH allowed without TLS (a test password)."""
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=box.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """Plain SMTP with AUTH allowed without TLS (the password is a test value)."""
    with plain_server(Mailbox(free_port())) as box:
        yield box


def starttls_server(cert: str, key: str) -> tuple[Mailbox, Controller]:
    box = Mailbox(free_port())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=box.authenticate,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
    )
    return box, controller
