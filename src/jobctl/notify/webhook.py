"""Webhook alerts: Slack-compatible JSON (``{"text": ...}``), which Slack, Mattermost,
Rocket.Chat and most chat bridges accept as it is."""

from __future__ import annotations

from collections.abc import Callable

from jobctl.config_models import WebhookChannel
from jobctl.notify.http import post_json


def send(channel: WebhookChannel, subject: str, body: str, clean: Callable[[str], str]) -> int:
    """Post one message; the number of requests it took (DeliveryFailed if none got it)."""
    text = f"*{subject}*\n{body}"
    return post_json(
        channel.url,
        {"text": text},
        headers=channel.headers,
        timeout=channel.timeout.total_seconds(),
        clean=clean,
    )
