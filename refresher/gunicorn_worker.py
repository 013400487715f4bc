"""gunicorn's web worker for this service: gthread, with one change against
slow clients. A connection gets one of the worker's threads only once its
request has arrived: the event loop reads the request head (and a small
body) without blocking, with a deadline, and lingering closes happen there
too. A thread's reads and writes give up after gunicorn's `timeout` without
progress. Measured in bench/slow_clients.py (see BENCHMARKS.md).

Selected in refresher/gunicorn_config.py as
`worker_class = "refresher.gunicorn_worker.RequestFirstWorker"`. It builds on
gthread's own methods: what it assumes of them is listed, and touched, in one
section below ("What this worker takes from gthread"), and
tests/test_gthread.py checks each assumption against the installed gunicorn.
Verified with gunicorn 27.0.1, the release requirements.txt pins;
pyproject.toml holds gunicorn below its next major release.
"""

import selectors
import socket
import struct
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from gunicorn import http
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

from refresher.arrival import TIMED_OUT, Arrival, Refusal

if TYPE_CHECKING:
    from gunicorn.workers.gthread import TConn

HEAD_TIMEOUT = 20.0  # seconds for a request head (and a small body) to arrive, then 408
# A closed connection's reads go on while the client still sends (it may not
# read our answer before it has sent its whole body), as nginx's lingering close:
LINGER_SECONDS = 30.0  # at most, in all
LINGER_IDLE_SECONDS = 2.0  # without a byte, it ends


# --- What this worker takes from gthread ------------------------------------------------
#
# 1. `ThreadWorker.enqueue_req(conn)` is where every connection with a request
#    to serve arrives: new ones (`accept`), kept-alive ones that became
#    readable, deferred ones, and pipelined ones (`finish_request`). Overridden:
#    the request is read on the event loop first.
# 2. `finish_request(conn, fs)` runs on the event loop once a thread is done
#    with a connection; `fs.result()` False means it is to be closed.
#    Overridden for that case: the close lingers on the event loop.
# 3. `murder_pending()` runs on the event loop at least once a second, and
#    `_cap_keepalive(deadline)` once when the worker stops. Extended: the
#    deadlines of requests arriving.
# 4. `self.poller` is a selector whose keys' data is a callback taking the
#    file object; `self.nr_conns` counts open connections (against
#    `worker_connections`), so a connection closed here is taken off it.
# 5. A connection (`TConn`) has `.sock`, `.client` and `.parser`: None before
#    its first request, after that its `.unreader` holds bytes read ahead
#    (`take_buffered()`, `unread()`); `.data_ready` True makes `handle()`
#    skip its wait for a first byte; `.close()`.
# 6. `gunicorn.http.get_parser(cfg, sock, client)` makes the parser a thread
#    reads the request with, from the socket unreader it is given.
# 7. `self.wsgi` is the (Flask) application a thread calls (set by `load_wsgi()`),
#    with gunicorn's `Response.start_response` as its `start_response`: a
#    bound method, whose response's `force_close()` makes the answer say
#    `Connection: close` and the thread answer False (the connection closes,
#    without draining the body). The request body (`wsgi.input`) is a
#    `Body` whose `.reader` is a `LengthReader` (`.length` is what is left
#    to read) or a `ChunkedReader` (`.parser` is None once the last chunk
#    is read). Extended: an answer begun before the body is read closes.


def _read_ahead(conn) -> bytes:
    """What gthread's parser already read past the last request (pipelining)."""
    return conn.parser.unreader.take_buffered() if conn.parser else b""


def _hand_over(conn, cfg, arrived: bytes, idle: bytes) -> None:
    """Give the bytes read on the event loop to the parser a thread reads the
    request with, and tell gthread not to wait for a first byte."""
    if conn.parser is None:
        conn.parser = http.get_parser(cfg, conn.sock, conn.client)
        conn.parser.unreader = _StallEndsBody(conn.sock)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, idle)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, idle)
    conn.parser.unreader.unread(arrived)
    conn.data_ready = True


def _body_left(body) -> bool:
    """Whether some of the request body is still to be read (from the socket,
    or from what was read ahead)."""
    reader = getattr(body, "reader", None)
    if isinstance(reader, LengthReader):
        return reader.length > 0
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None
    return False


def _close_when_body_unread(app):
    """An answer begun before the application read the whole request body
    says `Connection: close`, and the connection closes (lingering) after
    it: gunicorn would announce keep-alive, drain at most 64 KB of the rest,
    and close anyway, so a client's next request on that pooled connection
    failed."""

    def answer_closing_when_body_unread(environ, start_response):
        def start(status, headers, exc_info=None):
            if _body_left(environ.get("wsgi.input")):
                start_response.__self__.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return answer_closing_when_body_unread


class _StallEndsBody(SocketUnreader):
    """A read that waited `timeout` seconds for a byte (SO_RCVTIMEO) ends the
    body, as when the client goes away: Werkzeug then answers 400, and the
    connection is closed without waiting for the rest."""

    def chunk(self, size_hint=None):
        try:
            return super().chunk(size_hint)
        except BlockingIOError:
            try:
                self.sock.shutdown(socket.SHUT_RD)  # every later read ends at once
            except OSError:
                pass
            return b""


class RequestFirstWorker(ThreadWorker):
    """gthread, except that a thread is given only to a request that has arrived.

    Stock gthread hands a connection to a thread as soon as its first byte is
    in, and the thread then waits for the rest: a client sending one byte a
    second held a thread for as long as it liked, and 64 of them stalled the
    service. Here the worker's event loop, which already watches idle
    keep-alive connections, also reads request heads (and bodies up to
    PREFETCH_BYTES, so a small JSON or form body is complete too) without
    blocking, and a thread gets the connection once they are in: a slow
    client costs a socket and a buffer, never a thread. A head not in after
    HEAD_TIMEOUT gets 408.

    Past that, a thread reads an upload's body and writes responses with
    blocking calls that give up after `timeout` seconds without progress
    (SO_RCVTIMEO/SO_SNDTIMEO), so a stalled client frees its thread. An
    answer begun before the app read the whole body (a refused upload) says
    `Connection: close` and is not followed by a drain in the thread. And a
    connection closed after its answer lingers on the event loop, not in a
    thread nor blocking it (gunicorn's own close reads what the client still
    sends for up to 2 s on the loop's thread, which let a trickling client
    pause the whole worker): the client's bytes are read and discarded for
    up to 30 s while they keep coming, so that a client sending a large body
    reads the answer rather than a reset. A stopping worker gives requests
    still arriving what it gives kept-alive connections (2 s).

    TLS and cleartext HTTP/2 connections are served as stock gthread does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arriving: deque[TConn] = deque()  # connections whose request is arriving, oldest first
        self.lingering: set[_Linger] = set()  # closed connections still read from
        self.lingering_checked = 0.0
        self.reads_ahead = (
            not self.cfg.is_ssl
            and self.cfg.http2_cleartext == "off"
            and getattr(self.cfg, "protocol", "http") == "http"
        )
        self.idle = struct.pack("ll", max(0, int(self.cfg.timeout)), 0)  # 0: no limit, as gunicorn

    def load_wsgi(self):
        super().load_wsgi()
        # As WSGI middleware of the Flask app (its documented place), so that
        # self.wsgi stays the app: post_worker_init reaches its extensions.
        app: Any = self.wsgi
        app.wsgi_app = _close_when_body_unread(app.wsgi_app)

    def enqueue_req(self, conn):
        """Every connection with a request to serve comes here: new ones,
        kept-alive ones that became readable, and pipelined ones."""
        if not self.reads_ahead or getattr(conn, "request_in", False):
            conn.request_in = False
            return super().enqueue_req(conn)
        conn.arrived = bytearray(_read_ahead(conn))
        conn.arrival = Arrival(max_fields=self.cfg.limit_request_fields)
        conn.continued = False
        verdict = conn.arrival.feed(bytes(conn.arrived)) if conn.arrived else False
        if verdict is True:
            return self._serve(conn)
        conn.sock.setblocking(False)
        if isinstance(verdict, Refusal):
            return self._refuse(conn.sock, verdict)
        conn.deadline = time.monotonic() + HEAD_TIMEOUT
        self.arriving.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        self._continue_if_expected(conn)

    def _on_request_bytes(self, conn, _sock):
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self._drop(conn)
        conn.arrived += data
        verdict = conn.arrival.feed(data)
        if verdict is True:
            self.poller.unregister(conn.sock)
            self.arriving.remove(conn)
            self._serve(conn)
        elif isinstance(verdict, Refusal):
            self._drop(conn, verdict)
        else:
            self._continue_if_expected(conn)

    def _continue_if_expected(self, conn):
        if conn.arrival.wants_continue and not conn.continued:
            # The client waits for this before sending its body. gunicorn sends
            # it again once a thread has the request; a client takes any
            # number of 1xx answers before the final one.
            conn.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass

    def _serve(self, conn):
        _hand_over(conn, self.cfg, bytes(conn.arrived), self.idle)
        conn.arrived = conn.arrival = None
        conn.request_in = True
        self.enqueue_req(conn)

    def _drop(self, conn, refusal: Refusal | None = None):
        """Stop reading a request: closed at once when the client went away,
        else answered with `refusal` and closed with a linger."""
        self.poller.unregister(conn.sock)
        self.arriving.remove(conn)
        if refusal is None:
            self.nr_conns -= 1
            conn.close()
        else:
            self._refuse(conn.sock, refusal)

    def _refuse(self, sock, refusal: Refusal):
        self.nr_conns -= 1
        try:
            sock.send(refusal.response())  # a few hundred bytes into an empty send buffer
        except OSError:
            pass
        self._linger(sock)

    def murder_pending(self):
        """Called by gthread's loop at least once a second."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving and self.arriving[0].deadline <= now:
            self._drop(self.arriving[0], TIMED_OUT)
        if now >= self.lingering_checked + 0.25:  # the loop may turn far more often than that
            self.lingering_checked = now
            for entry in [entry for entry in self.lingering if entry.deadline <= now]:
                self._end_linger(entry)

    def _cap_keepalive(self, deadline):
        """Called once when the worker stops."""
        super()._cap_keepalive(deadline)
        for conn in self.arriving:
            conn.deadline = min(conn.deadline, deadline)

    def finish_request(self, conn, fs):
        if fs.cancelled() or fs.exception() is not None or fs.result() is not False:
            return super().finish_request(conn, fs)
        self.nr_conns -= 1
        self._linger(conn.sock)

    def _linger(self, sock):
        """Closing after an answer: send FIN, then read (on the event loop) and
        discard what the client still sends, for up to LINGER_SECONDS while it
        keeps coming, so that it gets the answer rather than a reset."""
        if len(self.lingering) >= self.worker_connections:  # they are not counted in nr_conns: a bound of their own
            sock.close()
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        now = time.monotonic()
        entry = _Linger(sock, now + LINGER_SECONDS, now + LINGER_IDLE_SECONDS)
        self.lingering.add(entry)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_linger_bytes, entry))

    def _on_linger_bytes(self, entry, _sock):
        try:
            data = entry.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self._end_linger(entry)
        entry.deadline = min(entry.ends_at, time.monotonic() + LINGER_IDLE_SECONDS)

    def _end_linger(self, entry):
        self.lingering.discard(entry)
        self.poller.unregister(entry.sock)
        entry.sock.close()


class _Linger:
    """A connection closed after its answer, still read from."""

    __slots__ = ("sock", "ends_at", "deadline")

    def __init__(self, sock, ends_at: float, deadline: float):
        self.sock = sock
        self.ends_at = ends_at  # at the latest
        self.deadline = deadline  # unless a byte comes before
