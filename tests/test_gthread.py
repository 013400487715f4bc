"""Each assumption refresher/gunicorn_worker.py makes about gunicorn's gthread
worker ("What this worker takes from gthread", numbered alike), checked
against the installed gunicorn, so that an upgrade that breaks one fails
here by name rather than as a stalled server. The worker's behaviour itself
is tested over real connections in tests/test_slow_clients.py."""

from __future__ import annotations

import inspect
import re
import socket
import textwrap

import gunicorn
from gunicorn import http
from gunicorn.config import Config
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

from refresher import gunicorn_worker

VERIFIED = {"27.0.1"}


def source(function) -> str:
    return textwrap.dedent(inspect.getsource(function))


def test_the_installed_gunicorn_is_a_release_the_worker_was_verified_with():
    assert gunicorn.__version__ in VERIFIED, (
        f"gunicorn {gunicorn.__version__}: check each assumption below, then add it to VERIFIED and the README"
    )
    assert "27.0.1" in gunicorn_worker.__doc__


def test_1_every_connection_with_a_request_goes_through_enqueue_req():
    worker = gthread.ThreadWorker
    assert list(inspect.signature(worker.enqueue_req).parameters) == ["self", "conn"]
    for entry in (
        worker.accept,
        worker.on_client_socket_readable,
        worker.on_pending_socket_readable,
        worker.finish_request,
    ):
        assert "self.enqueue_req(conn)" in source(entry), entry.__name__
    # and nothing else hands a connection to a thread
    submits = re.findall(r"self\.tpool\.submit\(", inspect.getsource(gthread))
    assert len(submits) == 1 and "self.tpool.submit(self.handle, conn)" in source(worker.enqueue_req)


def test_2_finish_request_closes_when_the_thread_answers_false():
    text = source(gthread.ThreadWorker.finish_request)
    assert list(inspect.signature(gthread.ThreadWorker.finish_request).parameters) == ["self", "conn", "fs"]
    assert "fs.result()" in text and "conn.close(graceful=True)" in text and "self.nr_conns -= 1" in text
    # handle() returns False for a connection to close, True to keep alive
    assert re.search(r"return False", source(gthread.ThreadWorker.handle))


def test_3_murder_pending_runs_every_turn_and_cap_keepalive_once_at_stop():
    run = source(gthread.ThreadWorker.run)
    assert "self.wait_for_and_dispatch_events(timeout=1.0)" in run
    loop, _, stopping = run.partition("while self.alive:")[2].partition("self.set_accept_enabled(False)")
    assert "self.murder_pending()" in loop
    assert stopping.count("self._cap_keepalive(") == 1 and run.count("self._cap_keepalive(") == 1
    assert list(inspect.signature(gthread.ThreadWorker._cap_keepalive).parameters) == ["self", "deadline"]


def test_4_the_poller_calls_back_with_the_file_object_and_nr_conns_counts_connections():
    dispatch = source(gthread.ThreadWorker.wait_for_and_dispatch_events)
    assert "callback = key.data" in dispatch and "callback(key.fileobj)" in dispatch
    assert "self.nr_conns += 1" in source(gthread.ThreadWorker.accept)
    assert "self.nr_conns < self.worker_connections" in source(gthread.ThreadWorker.run)
    assert "self.poller = selectors.DefaultSelector()" in inspect.getsource(gthread)


def test_5_a_connection_s_parser_unreader_and_data_ready():
    left, right = socket.socketpair()
    try:
        conn = gthread.TConn(Config(), left, ("127.0.0.1", 1), ("127.0.0.1", 2))
        assert conn.parser is None and conn.data_ready is False and conn.sock is left
        # handle() waits for a first byte only when neither is set ...
        assert "if not conn.initialized and not conn.data_ready:" in source(gthread.ThreadWorker.handle)
        # ... and init() keeps a parser that is already there (with the bytes read ahead)
        init = source(gthread.TConn.init)
        assert "if self.parser is None:" in init and init.index("if self.parser is None:") < init.index(
            "self.parser = http.get_parser("
        )
        unreader = SocketUnreader(left)
        right.sendall(b"abcdef")
        assert unreader.read(2) == b"ab"
        assert unreader.take_buffered() == b"cdef" and unreader.take_buffered() == b""
        unreader.unread(b"xyz")
        assert unreader.read() == b"xyz"
    finally:
        left.close()
        right.close()
    assert "def close(" in source(gthread.TConn)


def test_6_get_parser_reads_from_the_unreader_it_is_given():
    left, right = socket.socketpair()
    try:
        parser = http.get_parser(Config(), left, ("127.0.0.1", 1))
        parser.unreader = gunicorn_worker._StallEndsBody(left)
        parser.unreader.unread(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        request = next(parser)
        assert request.method == "GET" and request.path == "/x"
    finally:
        left.close()
        right.close()


def test_7_the_app_s_start_response_can_force_a_close_and_the_body_says_what_is_left():
    from gunicorn.http.body import Body, ChunkedReader, LengthReader
    from gunicorn.http.wsgi import Response
    from gunicorn.workers.base import Worker

    assert "self.wsgi = self.app.wsgi()" in source(Worker.load_wsgi)
    handle = source(gthread.ThreadWorker.handle_request)
    assert "self.wsgi(environ, resp.start_response)" in handle
    assert re.search(r"if resp\.should_close\(\):.*?return False", handle, re.S)
    assert "self.must_close = True" in source(Response.force_close)
    assert "if self.must_close" in source(Response.should_close)
    assert "if not keepalive:\n        return False" in source(gthread.ThreadWorker._keepalive_after)

    left, right = socket.socketpair()
    try:
        right.sendall(b"abcdef" + b"3\r\nabc\r\n0\r\n\r\n")
        unreader = SocketUnreader(left)
        body = Body(LengthReader(unreader, 6))
        assert body.reader.length == 6 and body.read() == b"abcdef" and body.reader.length == 0

        class Request:
            limit_request_field_size = 0
            max_buffer_headers = 0

        body = Body(ChunkedReader(Request(), unreader))
        assert body.reader.parser is not None and body.read() == b"abc" and body.reader.parser is None
    finally:
        left.close()
        right.close()


def test_the_overridden_methods_keep_gthread_s_signatures():
    for name in ("enqueue_req", "finish_request", "murder_pending", "_cap_keepalive"):
        ours = getattr(gunicorn_worker.RequestFirstWorker, name)
        theirs = getattr(gthread.ThreadWorker, name)
        assert inspect.signature(ours) == inspect.signature(theirs), name
    assert issubclass(gunicorn_worker.RequestFirstWorker, gthread.ThreadWorker)
