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
from jobctl.notify import DeliveryFailed, RecipientRefused

ATTEMPTS = 4
FIRST_WAIT = 0.2


def message(
    channel: EmailChannel,
    subject: str,
    body: str,
    headers: dict[str, str],
    *,
    html: str | None = None,
    to: tuple[str, ...] | None = None,
) -> EmailMessage:
    """A mail from the channel's sender to ``to`` (default: the channel's list); with
    ``html``, multipart/alternative: the text part first, as mail clients expect."""
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = channel.sender
    mail["To"] = ", ".join(to or channel.to)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2] or None)
    for name, value in headers.items():
        mail[name] = value
    mail.set_content(body)
    if html is not None:
        # base64: a report's HTML is most of the mail, and quoted-printable costs
        # milliseconds of pure Python per mail; every client decodes either.
        mail.add_alternative(html, subtype="html", cte="base64")
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


class Mailer:
    """One SMTP session for many messages (a report to every recipient): connected on
    first use, dropped and opened again after a failed try, closed at the end."""

    def __init__(self, channel: EmailChannel, clean: Callable[[str], str]) -> None:
        self.channel = channel
        self._clean = clean
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _session(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        channel = self.channel
        timeout = channel.timeout.total_seconds()
        smtp: smtplib.SMTP
        if channel.tls:
            smtp = smtplib.SMTP_SSL(
                channel.smtp_host, channel.smtp_port, timeout=timeout, context=_context(channel)
            )
        else:
            smtp = smtplib.SMTP(channel.smtp_host, channel.smtp_port, timeout=timeout)
        try:
            if channel.starttls:
                smtp.starttls(context=_context(channel))
            if channel.username is not None and channel.password is not None:
                smtp.login(channel.username, channel.password)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def send(self, mail: EmailMessage) -> int:
        """Send one message; the number of tries it took. :class:`RecipientRefused` if
        the server refused its recipients, :class:`DeliveryFailed` for anything else."""
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            try:
                self._session().send_message(mail)
            except smtplib.SMTPRecipientsRefused:
                # The session is fine (the server said no to this address): keep it.
                raise
            except BaseException:
                self.close()  # whatever state it was left in, the next try starts afresh
                raise

        retrying = Retrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential_jitter(multiplier=FIRST_WAIT, max=2.0, jitter=FIRST_WAIT),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            retrying(once)
        except (smtplib.SMTPException, OSError) as exc:
            channel = self.channel
            where = f"{channel.smtp_host}:{channel.smtp_port}"
            times = "1 try" if tries == 1 else f"{tries} tries"
            # The server's reply may quote what it was sent: the redactor masks the password.
            text = self._clean(f"SMTP {where}: {type(exc).__name__}: {exc} ({times})")
            if isinstance(exc, smtplib.SMTPRecipientsRefused):
                raise RecipientRefused(text) from None
            raise DeliveryFailed(text) from None
        return tries


def send(
    channel: EmailChannel,
    subject: str,
    body: str,
    clean: Callable[[str], str],
    headers: dict[str, str] | None = None,
) -> int:
    """Send one message; the number of tries it took (DeliveryFailed if none got through)."""
    with Mailer(channel, clean) as mailer:
        return mailer.send(message(channel, subject, body, headers or {}))
