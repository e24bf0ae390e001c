"""Alert delivery: e-mail (:mod:`.email`) and webhooks (:mod:`.webhook`), and what to
send when (:mod:`.alerts`). Imported only when a run has ended failed, abandoned or
recovered: a skipped tick never loads httpx or smtplib."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A channel could not take a message (after its retries). The text is redacted."""
