"""Deciding, byte by byte, whether a request has arrived.

The web worker gives a connection a thread only once its request head, and
its body up to a small prefetch, are in (refresher/gunicorn_worker.py). That
decision is HTTP parsing, so it is h11's: an incremental, bounded, sans-IO
HTTP/1.1 parser. Bytes are fed as they come, and each costs the same
whatever came before (h11 resumes its search for the end of the head where
the last one stopped). gunicorn's own parser still reads the request in the
thread; this module only says when to hand it over, and refuses what h11
finds malformed before any thread is spent on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import h11

HEAD_MAX_BYTES = 64 * 1024  # a longer head is refused with 431 (browsers send a few kB)
PREFETCH_BYTES = 64 * 1024  # body read before a thread is given: every route but the upload takes no more
MAX_HEADER_FIELDS = 100  # gunicorn's limit_request_fields


@dataclass(frozen=True)
class Refusal:
    """A request that will not be served: answer `status` and close."""

    status: int
    reason: str

    def response(self) -> bytes:
        """The whole answer, a JSON error as every other, and `Connection: close`."""
        body = json.dumps({"error": self.reason}).encode()
        phrase = _PHRASES.get(self.status, "Bad Request")
        return (
            f"HTTP/1.1 {self.status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body


_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
TIMED_OUT = Refusal(408, "the request did not arrive in time")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS ClientHello; no HTTP method begins with it


class Arrival:
    """One request arriving on a connection. `feed` each read's bytes; it
    answers whether the request is in (`True`), still arriving (`False`), or
    refused (a `Refusal`). `wants_continue` turns true once a head that
    expects `100 Continue` is in and nothing of its body was sent."""

    def __init__(
        self, head_max: int = HEAD_MAX_BYTES, prefetch: int = PREFETCH_BYTES, max_fields: int = MAX_HEADER_FIELDS
    ):
        self._parser = h11.Connection(h11.SERVER, max_incomplete_event_size=head_max)
        self._head_max = head_max
        self._prefetch = prefetch
        self._max_fields = max_fields
        self._body = 0
        self._head_lines = 0  # line ends seen before the end of the head
        self._head_ended = False
        self._tail = b""  # the last bytes fed, where an end of head may have begun
        self.head_in = False
        self.verdict: bool | Refusal = False

    @property
    def wants_continue(self) -> bool:
        return self.head_in and self.verdict is False and self._parser.they_are_waiting_for_100_continue

    def feed(self, data: bytes) -> bool | Refusal:
        if self.verdict is not False or not data:  # to h11, no bytes would mean the end of the stream
            return self.verdict
        if not self._tail and data[:1] == TLS_HANDSHAKE:
            # An https:// client on this plain-HTTP port: answered at once (its
            # TLS library then says so), not after the head's timeout.
            self.verdict = Refusal(400, "this port speaks plain HTTP, not HTTPS: use an http:// URL")
            return self.verdict
        if not self._head_ended and self._count_head_lines(data) > self._max_fields + 1:
            # Refused before h11 parses every line of it: a 12,000-line head
            # would cost it ~15 ms, and a client can send one a connection.
            self.verdict = Refusal(431, f"the request has more than {self._max_fields} header fields")
            return self.verdict
        self._parser.receive_data(data)
        try:
            self.verdict = self._advance()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint in _PHRASES else 400
            self.verdict = Refusal(
                status,
                f"the request head is larger than {self._head_max // 1024} KB"
                if status == 431
                else f"malformed HTTP request: {exc}",
            )
        return self.verdict

    def _count_head_lines(self, data: bytes) -> int:
        window = self._tail + data
        end = _HEAD_END.search(window)
        upto = len(data) if end is None else max(0, end.start() + 1 - len(self._tail))
        self._head_lines += data.count(b"\n", 0, upto)
        self._head_ended = end is not None
        self._tail = window[-3:]
        return self._head_lines

    def _advance(self) -> bool | Refusal:
        while True:
            event = self._parser.next_event()
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.Request):
                self.head_in = True
                if len(event.headers) > self._max_fields:
                    return Refusal(431, f"the request has more than {self._max_fields} header fields")
            elif isinstance(event, h11.Data):
                self._body += len(event.data)
                if self._body >= self._prefetch:
                    return True
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                return True
            # ConnectionClosed cannot come: the caller never feeds an end of stream
