"""Alert and report delivery: e-mail (:mod:`.email`) and webhooks (:mod:`.webhook`), and
what to send when (:mod:`.alerts`). Imported only when a run has ended failed, abandoned or
recovered: a skipped tick never loads httpx or smtplib."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A channel could not take a message (after its retries). The text is redacted."""


class RecipientRefused(DeliveryFailed):
    """The mail server refused the message's recipients (the address, not the server,
    is the problem: the next message may well go through)."""
