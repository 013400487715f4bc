"""Delivering webhooks, from the supervisor's side (never in a web request).

`WebhookSender` is a thread of the supervisor: it claims the deliveries that
are due (`store.claim_webhooks`: one host per attempt, cluster-wide), makes
each attempt on a small pool of threads of its own, and records what each
met. An attempt is one POST, signed per Standard Webhooks
(standardwebhooks.com) with WEBHOOK_SECRET, to an address vetted just now
(`address.vet`, again at every attempt) — the connection goes to that
address, the name is only the Host header and the TLS server name — with no
redirect followed. A 2xx answer within ATTEMPT_SECONDS delivers it; anything
else is retried, with the same webhook-id and body, after each delay of
WEBHOOK_RETRY_SECONDS, then given up."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from standardwebhooks import Webhook

from ..settings import Settings
from ..shapes import iso, job_detail
from ..store import Error as StoreError
from ..store import Store
from ..store.webhooks import gave_up
from .address import Refused, Resolver, parse_url, resolve_with_system, vet

log = logging.getLogger("refresher.webhooks")

ATTEMPT_SECONDS = 10.0  # a receiver that takes longer has not answered
# How long a claim on an attempt lasts: longer than an attempt can take (the
# name's resolution, the connection, the answer), so that no other host
# starts the same attempt while this one runs; a host that dies mid-attempt
# leaves the delivery due again after this.
CLAIM_SECONDS = 60.0
LOOK_SECONDS = 1.0  # how often the store is asked for deliveries that became due
SENDERS = 4  # attempts at once: a slow receiver does not hold up the others
USER_AGENT = "video-refresher-webhooks"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address decided beforehand, whatever the name resolves to now."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address decided beforehand; the certificate is checked
    against the URL's host name, which is also the TLS server name."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def signed_headers(secret: str, message_id: str, body: bytes, now: float) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: its id, its time, and the
    signature of "id.timestamp.body" under the secret."""
    timestamp = datetime.fromtimestamp(int(now), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(secret).sign(message_id, timestamp, body),
    }


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    resolve: Resolver = resolve_with_system,
    timeout: float = ATTEMPT_SECONDS,
) -> str | None:
    """One attempt: None when the receiver answered 2xx in time; else what
    went wrong, as a sentence for the job's `lastError`."""
    started = time.monotonic()
    try:
        destination = parse_url(url)
        addresses = vet(destination, allow_private, resolve)
    except Refused as exc:
        return f"not sent: the URL {exc}"
    kind = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    last = "no address to connect to"
    for address in addresses:
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            return f"no answer within {timeout:g} s"
        connection = kind(str(address), destination.host, destination.port, timeout=remaining)
        try:
            connection.request(
                "POST",
                destination.target,
                body=body,
                headers={
                    **headers,
                    "Host": destination.host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
            )
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            last = f"could not send to {address}: {_describe(exc)}"
            if isinstance(exc, TimeoutError):
                return f"no answer within {timeout:g} s"
            continue  # the next address the name resolves to
        try:
            connection.sock.settimeout(max(0.001, timeout - (time.monotonic() - started)))
            response = connection.getresponse()
            response.read(65536)  # a little of the answer, so that it is seen whole; never more
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except (OSError, http.client.HTTPException) as exc:
            return f"no answer from {address}: {_describe(exc)}"
        finally:
            connection.close()
        if time.monotonic() - started > timeout:
            return f"no answer within {timeout:g} s"
        if 200 <= response.status < 300:
            return None
        return f"answered {response.status} {response.reason}".strip()
    return last


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def retry_at(settings: Settings, attempts: int, now: float) -> float | None:
    """When attempt number `attempts + 1` is due after attempt `attempts`
    failed at `now`; None when no retry is left."""
    delays = settings.webhook_retry_seconds
    return now + delays[attempts - 1] if attempts <= len(delays) else None


def max_attempts(settings: Settings) -> int:
    return 1 + len(settings.webhook_retry_seconds)


class WebhookSender:
    """The supervisor's thread that delivers webhooks (see the module)."""

    def __init__(self, store: Store, settings: Settings, resolve: Resolver = resolve_with_system):
        self.store = store
        self.settings = settings
        self.resolve = resolve
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No new attempt starts; those under way finish (each is bounded by
        ATTEMPT_SECONDS) and are recorded."""
        self.stopping.set()
        self.wake.set()
        self._thread.join(ATTEMPT_SECONDS + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            pause = LOOK_SECONDS
            try:
                pause = self.deliver_due()
            except StoreError as exc:
                log.error("webhooks: %s", exc)
            self.wake.wait(pause)
            self.wake.clear()

    def deliver_due(self) -> float:
        """Claim what is due and start on it; how long to wait before looking again."""
        now = time.time()
        claimed = self.store.claim_webhooks(now, CLAIM_SECONDS, max_attempts(self.settings), limit=SENDERS)
        for delivery in claimed:
            self._pool.submit(self.attempt, delivery)
        if len(claimed) == SENDERS:
            return 0.0  # there may be more
        due = self.store.next_webhook_due()
        return LOOK_SECONDS if due is None else max(0.0, min(LOOK_SECONDS, due - time.time()))

    def attempt(self, delivery: dict) -> None:
        """One attempt of a claimed delivery, recorded whatever it met."""
        try:
            error = self._attempt(delivery)
        except (StoreError, OSError, ValueError) as exc:  # recorded as the attempt's failure
            error = f"not sent: {_describe(exc)}"
            log.exception("webhook %s", delivery["id"])
        now = time.time()
        if error is None:
            log.info("webhook %s for job %s delivered", delivery["id"], delivery["job_id"])
            next_at = None
        else:
            next_at = retry_at(self.settings, delivery["attempts"], now)
            if next_at is None:
                error = f"{error}; {gave_up(delivery['attempts'])}"
            log.warning(
                "webhook %s for job %s, attempt %d: %s", delivery["id"], delivery["job_id"], delivery["attempts"], error
            )
        try:
            self.store.record_webhook_attempt(delivery["id"], delivery["attempts"], now, error, next_at)
        except StoreError as exc:  # the claim runs out and the attempt is made again
            log.error("webhook %s: its attempt could not be recorded: %s", delivery["id"], exc)
        if next_at is not None:
            self.wake.set()  # the retry may be due before the next look

    def _attempt(self, delivery: dict) -> str | None:
        secret = self.settings.webhook_secret
        if not secret:
            return "not sent: WEBHOOK_SECRET is not set on this host"
        if not delivery["webhook_url"]:
            return "not sent: the job has no webhook URL"
        body = delivery["body"]
        if body is None:
            whole = self.store.get_job_whole(delivery["job_id"])
            if whole is None:
                return "not sent: the job is gone"
            made = json.dumps(
                {"type": delivery["event"], "timestamp": iso(delivery["occurred_at"]), "data": job_detail(*whole)},
                separators=(",", ":"),
            )
            body = self.store.keep_webhook_body(delivery["id"], made)
            if body is None:
                return "not sent: the job is gone"
        encoded = body.encode()
        headers = signed_headers(secret, delivery["id"], encoded, time.time())
        return post(
            delivery["webhook_url"],
            encoded,
            headers,
            allow_private=self.settings.webhook_allow_private,
            resolve=self.resolve,
        )
