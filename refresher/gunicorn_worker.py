"""gunicorn's web worker for this service: gthread, with one change against
slow clients. A connection gets one of the worker's threads only once its
request has arrived: the event loop reads the request head (and a small
body) without blocking, with a deadline, and lingering closes happen there
too. A thread's reads and writes give up after gunicorn's `timeout` without
progress. Measured in bench/slow_clients.py (see BENCHMARKS.md).

Selected in config/gunicorn.conf.py as
`worker_class = "refresher.gunicorn_worker.RequestFirstWorker"`. It builds on
gthread's own methods, so gunicorn is held below its next major release.
"""
import selectors
import socket
import struct
import time
from collections import deque
from functools import partial

from gunicorn import http
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

HEAD_TIMEOUT = 20.0         # seconds for a request head (and a small body) to arrive, then 408
HEAD_MAX_BYTES = 64 * 1024  # a longer head is refused with 431 (browsers send a few kB)
PREFETCH_BYTES = 64 * 1024  # body read before a thread is given: every route but the upload takes no more
LINGER_SECONDS = 2.0        # as gunicorn's own graceful close
LINGER_MAX_BYTES = 64 * 1024


def request_ready(data: bytes) -> bool:
    """Whether `data`, read from a connection, holds a whole request head and
    its body, or PREFETCH_BYTES of the body when it is longer."""
    head = _parse_head(data)
    if head is None:
        return False
    end, length, chunked, _ = head
    body = data[end:]
    if length is None or len(body) >= PREFETCH_BYTES:
        return True
    return _chunked_body_complete(body) if chunked else len(body) >= length


def _parse_head(data: bytes):
    """(where the body starts, Content-Length, chunked, expects 100-continue),
    None while the head is incomplete; a Content-Length of None when it is not
    a number (gunicorn's parser will answer 400)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    length, chunked, expects = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value) if value.isdigit() and len(value) < 19 else None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"expect":
            expects = value == b"100-continue" and lines[0].endswith(b"HTTP/1.1")
    return end + 4, length, chunked, expects


def _chunked_body_complete(body: bytes) -> bool:
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        try:
            size = int(body[pos:eol].split(b";")[0], 16)
        except ValueError:
            return True  # gunicorn's parser answers 400
        if size == 0:  # the last chunk; trailers, if any, end with an empty line
            return body.find(b"\r\n\r\n", eol) >= 0
        pos = eol + 2 + size + 2
        if pos > len(body):
            return False


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
    (SO_RCVTIMEO/SO_SNDTIMEO), so a stalled client frees its thread. (The
    rest of a body the app refused is drained by gunicorn for at most 5 s
    and 64 KB; for an upload refused for want of a token, those 64 KB are
    already in.) And a connection closed after its answer lingers on the
    event loop, not in a thread nor blocking it: gunicorn's own close reads
    what the client still sends for up to 2 s on the loop's thread, which
    let a trickling client pause the whole worker. A stopping worker gives
    requests still arriving what it gives kept-alive connections (2 s).

    TLS and cleartext HTTP/2 connections are served as stock gthread does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.arriving = deque()   # connections whose request is arriving, oldest first
        self.lingering = deque()  # [deadline, socket, bytes read] of closed connections
        self.reads_ahead = not self.cfg.is_ssl and self.cfg.http2_cleartext == "off" \
            and getattr(self.cfg, "protocol", "http") == "http"
        self.idle = struct.pack("ll", max(0, int(self.cfg.timeout)), 0)  # 0: no limit, as gunicorn

    def enqueue_req(self, conn):
        """Every connection with a request to serve comes here: new ones,
        kept-alive ones that became readable, and pipelined ones."""
        if not self.reads_ahead or getattr(conn, "request_in", False):
            conn.request_in = False
            return super().enqueue_req(conn)
        conn.arrived = bytearray(conn.parser.unreader.take_buffered() if conn.parser else b"")
        conn.continued = False
        if self._arrived(conn):
            return self._serve(conn)
        conn.deadline = time.monotonic() + HEAD_TIMEOUT
        conn.sock.setblocking(False)
        self.arriving.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

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
        if self._arrived(conn):
            self.poller.unregister(conn.sock)
            self.arriving.remove(conn)
            self._serve(conn)
        elif conn.arrived.find(b"\r\n\r\n") < 0 and len(conn.arrived) > HEAD_MAX_BYTES:
            self._drop(conn, 431, "Request Header Fields Too Large")

    def _arrived(self, conn) -> bool:
        if request_ready(conn.arrived):
            return True
        head = _parse_head(conn.arrived)
        if head is not None and head[3] and not conn.continued:
            # The client waits for this before sending its body. gunicorn sends
            # it again once a thread has the request; a client takes any
            # number of 1xx answers before the final one.
            conn.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass
        return False

    def _serve(self, conn):
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = _StallEndsBody(conn.sock)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.idle)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.idle)
        conn.parser.unreader.unread(bytes(conn.arrived))
        conn.arrived = None
        conn.data_ready = True   # gthread would otherwise wait for a first byte in the thread
        conn.request_in = True
        self.enqueue_req(conn)

    def _drop(self, conn, status=None, reason=""):
        self.poller.unregister(conn.sock)
        self.arriving.remove(conn)
        if status:
            try:
                conn.sock.send(f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                               "Content-Length: 0\r\n\r\n".encode())
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """Called by gthread's loop at least once a second."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving and self.arriving[0].deadline <= now:
            self._drop(self.arriving[0], 408, "Request Timeout")
        while self.lingering and self.lingering[0][0] <= now:
            self._end_linger(self.lingering[0])

    def _cap_keepalive(self, deadline):
        """Called once when the worker stops."""
        super()._cap_keepalive(deadline)
        for conn in self.arriving:
            conn.deadline = min(conn.deadline, deadline)

    def finish_request(self, conn, fs):
        if fs.cancelled() or fs.exception() is not None or fs.result() is not False:
            return super().finish_request(conn, fs)
        # Closing after the answer: send FIN, then read what the client still
        # sends for a while, so that it gets the answer rather than a reset.
        self.nr_conns -= 1
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            conn.sock.close()
            return
        entry = [time.monotonic() + LINGER_SECONDS, conn.sock, 0]
        self.lingering.append(entry)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_bytes, entry))

    def _on_linger_bytes(self, entry, _sock):
        try:
            data = entry[1].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        entry[2] += len(data)
        if not data or entry[2] >= LINGER_MAX_BYTES:
            self._end_linger(entry)

    def _end_linger(self, entry):
        self.lingering.remove(entry)
        self.poller.unregister(entry[1])
        entry[1].close()
