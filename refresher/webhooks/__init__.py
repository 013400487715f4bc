"""Webhooks: a job created with a `webhookUrl` gets one signed POST when it
ends (shared contract: "Webhooks — hearing when a job ends").

    address.py   which URLs may be called: http(s), public addresses only,
                 in every spelling, after resolution
    delivery.py  the supervisor's sender: claims, signs, posts, retries

`accept_url` is what the intake asks when a job names a URL."""

from __future__ import annotations

from ..errors import Rejected
from ..settings import Settings
from .address import Refused, Resolver, parse_url, resolve_with_system, vet

FIELD = "webhookUrl"


def accept_url(raw: object, settings: Settings, resolve: Resolver = resolve_with_system) -> str | None:
    """The job's webhook URL (None when none was given), or a 400 naming
    what is wrong with it: the setting it needs, its form, or where it leads."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not settings.webhook_secret:
        raise Rejected(400, f"{FIELD} needs WEBHOOK_SECRET to be set on the server (a whsec_… key that signs webhooks)")
    try:
        destination = parse_url(raw)
        vet(destination, settings.webhook_allow_private, resolve)
    except Refused as exc:
        raise Rejected(400, f"{FIELD} {exc}", field=FIELD) from None
    return destination.url
