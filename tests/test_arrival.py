"""What decides that a request has arrived (refresher/arrival.py), fed
well-formed, random and hostile byte streams in every split."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refresher.arrival import HEAD_MAX_BYTES, PREFETCH_BYTES, Arrival, Refusal

# Wall-clock deadlines fail on a busy machine (a pause of the whole process
# is not the parser's): each example's CPU time is bounded instead, far above
# what it takes (about a millisecond) and far below what a parser that
# started over on every read would take on 64 KB fed a byte at a time.
PER_EXAMPLE = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
CPU_PER_EXAMPLE = 0.5


def feed_all(data: bytes, cuts=()) -> bool | Refusal:
    arrival = Arrival()
    verdict: bool | Refusal = False
    start = 0
    began = time.process_time()
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        if cut > start:
            verdict = arrival.feed(data[start:cut])
            start = cut
    assert time.process_time() - began < CPU_PER_EXAMPLE
    return verdict


def test_a_request_is_in_once_its_head_and_small_body_are():
    assert feed_all(b"GET / HTTP/1.1\r\nHost: a\r\n") is False
    assert feed_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is True
    assert feed_all(b"GET / HTTP/1.0\r\n\r\n") is True
    assert feed_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabc") is False
    assert feed_all(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nabcde") is True
    big = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n"
    assert feed_all(big + b"a" * PREFETCH_BYTES) is True, "a long body: its first 64 KB are enough"
    assert feed_all(big + b"a" * 1000) is False
    chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert feed_all(chunked + b"3\r\nabc\r\n") is False
    assert feed_all(chunked + b"3\r\nabc\r\n0\r\n") is False
    assert feed_all(chunked + b"3\r\nabc\r\n0\r\n\r\n") is True
    assert feed_all(chunked + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n") is True
    pipelined = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 3
    assert feed_all(pipelined) is True


def test_malformed_requests_are_refused_with_a_json_reason():
    chunked = b"GET /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for bad in (
        chunked + b"-6\r\n",
        chunked + b"zz\r\n",
        chunked + b"1" * 30 + b"\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ):  # TLS to a plain port
        verdict = feed_all(bad)
        assert isinstance(verdict, Refusal) and verdict.status in (400, 501), bad
        answer = verdict.response()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {verdict.status} ".encode()) and b"\r\nConnection: close" in head
        assert json.loads(body)["error"]


def test_an_oversized_head_is_431():
    verdict = feed_all(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (HEAD_MAX_BYTES + 10))
    assert isinstance(verdict, Refusal) and verdict.status == 431 and "64 KB" in verdict.reason
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 100 + b"\r\n"
    for cuts in ([], [30], list(range(0, len(many), 7))):
        verdict = feed_all(many, cuts)
        assert isinstance(verdict, Refusal) and verdict.status == 431 and "100 header fields" in verdict.reason
    # a 12,000-line head is refused from its first hundred lines, before any parser reads the rest
    huge = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"a:b\r\n" * 12_000
    arrival = Arrival()
    assert isinstance(arrival.feed(huge[:700]), Refusal)
    # exactly 100 fields, and a body of line ends in the same read, are a request
    enough = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n" + b"X-A: b\r\n" * 98 + b"\r\n" + b"\n" * 500
    for cuts in ([], [len(enough) - 600], list(range(0, len(enough), 3))):
        assert feed_all(enough, cuts) is True


def test_expect_100_continue_is_seen_until_the_body_starts():
    arrival = Arrival()
    arrival.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n")
    assert not arrival.wants_continue
    arrival.feed(b"Expect: 100-continue\r\n\r\n")
    assert arrival.wants_continue
    assert arrival.feed(b"ab") is False and not arrival.wants_continue
    assert arrival.feed(b"c") is True


def test_no_bytes_is_not_the_end_of_the_stream():
    arrival = Arrival()
    assert arrival.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabc") is False
    assert arrival.feed(b"") is False
    assert arrival.feed(b"d") is True


def test_a_verdict_once_given_stays():
    arrival = Arrival()
    assert arrival.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is True
    assert arrival.feed(b"garbage \x00\xff") is True
    refused = Arrival()
    first = refused.feed(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\n")
    assert isinstance(first, Refusal) and refused.feed(b"GET / HTTP/1.1\r\n\r\n") == first


# --- property-based: every split, random and hostile bytes ---------------------------------

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
header_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@st.composite
def requests(draw):
    """A well-formed request, and how many of its bytes make it 'arrived'."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]))
    headers = [(b"Host", b"example")]
    headers += [(draw(tokens).encode(), draw(header_values).encode()) for _ in range(draw(st.integers(0, 20)))]
    body = draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "none"] if not body else ["length", "chunked"]))
    if framing == "length":
        headers.append((b"Content-Length", str(len(body)).encode()))
        encoded = body
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        sizes = draw(st.lists(st.integers(1, 700), max_size=8))
        encoded, pos = b"", 0
        for size in sizes + [len(body)]:
            piece = body[pos : pos + size]
            pos += len(piece)
            if piece:
                encoded += b"%x\r\n%s\r\n" % (len(piece), piece)
        encoded += b"0\r\n\r\n"
    else:
        encoded = b""
    head = f"{method} /api/x HTTP/1.1\r\n".encode() + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    data = head + b"\r\n" + encoded
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return data, cuts


@PER_EXAMPLE
@given(requests())
def test_a_well_formed_request_arrives_exactly_at_its_last_byte(example):
    data, cuts = example
    assert feed_all(data, cuts) is True
    assert feed_all(data[:-1], cuts) is False, "one byte short is still arriving"
    arrival = Arrival()
    for i in range(0, len(data) - 1):  # byte by byte, nothing decided early
        assert arrival.feed(data[i : i + 1]) is False
    assert arrival.feed(data[-1:]) is True


@PER_EXAMPLE
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=20))
def test_random_bytes_never_raise_or_hang(data, cuts):
    verdict = feed_all(data, [c for c in cuts if c <= len(data)])
    assert verdict is False or verdict is True or isinstance(verdict, Refusal)


hostile_pieces = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Expect: 100-continue\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"-6\r\n",
        b"ffffffffffffffffffffff\r\n",
        b"0\r\n",
        b"5\r\nabcde\r\n",
        b";ext=1",
        b" ",
        b"\t",
        b":",
        b"\x00",
        b"\xff",
        b"a" * 100,
        b"X: " + b"y" * 1000 + b"\r\n",
    ]
)


@PER_EXAMPLE
@given(st.lists(hostile_pieces, max_size=60), st.lists(st.integers(0, 70000), max_size=20))
def test_hostile_streams_end_in_a_verdict_or_keep_waiting_cheaply(pieces, cuts):
    data = b"".join(pieces)
    verdict = feed_all(data, [c for c in cuts if c <= len(data)])
    if isinstance(verdict, Refusal):
        assert verdict.status in (400, 431, 501)


def _seconds_to_trickle(lines: int) -> float:
    """Feeds a head of `lines` short header lines, then its body, one byte a call."""
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n" + b"a:b\r\n" * lines
    data = head + b"\r\n" + b"x" * 2000
    arrival = Arrival(max_fields=lines + 10)
    started = time.thread_time()  # this thread's CPU time: what other work on the machine does not stretch
    for i in range(len(data)):
        arrival.feed(data[i : i + 1])
    assert arrival.verdict is True
    return (time.thread_time() - started) / len(data)


def test_each_byte_costs_the_same_whatever_came_before():
    """A 12,000-line head (60 KB) trickled a byte at a time costs per byte
    what a 1,000-line one does: parsing is incremental, not re-done on every
    read (which made it quadratic)."""
    short = min(_seconds_to_trickle(1000) for _ in range(3))
    long = min(_seconds_to_trickle(12000) for _ in range(3))
    assert long < 3 * short, f"{long * 1e6:.1f} µs a byte against {short * 1e6:.1f}"
    assert long < 100e-6
