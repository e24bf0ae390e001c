"""E-mail alerts over SMTP (smtplib): plain, STARTTLS or implicit TLS, optional AUTH.

Retried (a few times, short backoff): connection errors, timeouts, a dropped
connection and 4xx replies (the server's "try again later"); never a 5xx reply or a
refused login, which a second try only repeats.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from jobctl.config_models import EmailChannel
from jobctl.notify import DeliveryFailed

ATTEMPTS = 4
FIRST_WAIT = 0.2


def message(
    channel: EmailChannel, subject: str, body: str, headers: dict[str, str]
) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2] or None)
    for name, value in headers.items():
        mail[name] = value
    mail.set_content(body)
    return mail


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    # a connection refused, a timeout, a server that hung up
    return isinstance(exc, (OSError, smtplib.SMTPServerDisconnected))


def _context(channel: EmailChannel) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=channel.ca_file)


def _deliver(channel: EmailChannel, mail: EmailMessage) -> None:
    timeout = channel.timeout.total_seconds()
    smtp: smtplib.SMTP
    if channel.tls:
        smtp = smtplib.SMTP_SSL(
            channel.smtp_host, channel.smtp_port, timeout=timeout, context=_context(channel)
        )
    else:
        smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=timeout)
    with smtp:
        if channel.starttls:
            smtp.starttls(context=_context(channel))
        if channel.username is not None and channel.password is not None:
            smtp.login(channel.username, channel.password)
        smtp.send_message(mail)


def send(
    channel: EmailChannel,
    subject: str,
    body: str,
    clean: Callable[[str], str],
    headers: dict[str, str] | None = None,
) -> int:
    """Send one message; the number of tries it took (DeliveryFailed if none got through)."""
    mail = message(channel, subject, body, headers or {})
    tries = 0

    def once() -> None:
        nonlocal tries
        tries += 1
        _deliver(channel, mail)

    retrying = Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=FIRST_WAIT, max=2.0, jitter=FIRST_WAIT),
        retry=retry_if_exception(_transient),
        reraise=True,
    )
    try:
        retrying(once)
    except (smtplib.SMTPException, OSError) as exc:
        where = f"{channel.smtp_host}:{channel.smtp_port}"
        times = "1 try" if tries == 1 else f"{tries} tries"
        # The server's reply may quote what it was sent: the redactor masks the password.
        raise DeliveryFailed(
            clean(f"SMTP {where}: {type(exc).__name__}: {exc} ({times})")
        ) from None
    return tries
