"""Latency of GET /api/health and GET /api/jobs/<id> while many slow clients
hold connections open, against a baseline with none, on one server in one run.

A slow client connects and sends one byte a second, never finishing:

* `--kind header` (the default): a request head;
* `--kind body`: a whole head of `POST /api/auth`, then a 60 KB body;
* `--kind linger`: a whole `GET /api/health` with `Connection: close`, then
  bytes nobody asked for, while the server closes the connection;
* `--kind long-head`: a 12,000-line request head at once, then its body one
  byte a packet (a parser that starts over on every read pays for the whole
  head with each byte);
* `--kind negative-chunk`: a chunked `GET /api/health` whose first chunk
  size is `-6` (a hand-written chunk parser looped on it for good);
* `--kind slow-reader`: the other way round: `GET` of a job's ZIP (its
  outputs grown to 50 MB each) with the pollers' own token, read `--rate`
  KB a second (1.5 by default) through a 4 KB receive buffer.

When the server closes one (or, for slow readers, answers `429` or cuts it
off), it connects again at the next byte's turn, so `--slow` of them stay
open for the whole phase (as an attacker would keep them). `--rate` is how
many bytes a second each sends (1 by default). Meanwhile
`--pollers` clients each poll health and a job's status every `--interval`
seconds on a new connection per request, giving up after 2.5 s (a timeout
counts as 2.5 s), and one real upload is sent; the same upload without slow
clients is the baseline.

    python -m bench.slow_clients [--slow 200] [--kind header|body|linger|long-head|negative-chunk|slow-reader]
                                 [--seconds 15] [--rate 1] [--pollers 4] [--interval 0.1] [--gunicorn-arg=...]

`--gunicorn-arg` (repeatable) passes an option to gunicorn after the config
file, e.g. `--gunicorn-arg=--worker-class=gthread` for stock gthread, to
compare designs. Every server listens on 127.0.0.1 only.
Target: with 200 slow connections open, p99 of both polls < 500 ms,
and uploads still work.
"""

from __future__ import annotations

import argparse
import http.client
import os
import selectors
import socket
import sqlite3
import threading
import time

import requests

from bench._harness import Server, make_clip, work_dir

CLIENT_LIMIT = 2.5  # seconds a poller waits for an answer


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class SlowClients:
    """`count` connections that each send one byte a second and never finish."""

    def __init__(self, port: int, count: int, kind: str, rate: float = 1.0):
        self.port, self.count, self.kind, self.rate = port, count, kind, rate
        self.owed = 0  # connections the server closed, to open again at the next tick
        self.stop = threading.Event()
        self.opened = 0  # connections made, first ones and replacements
        self.closed_by_server = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _payload(self) -> bytes:
        if self.kind == "linger":  # a whole request, then bytes the server never asked for
            return (
                f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n"
            ).encode() + b"a" * 60_000
        if self.kind == "long-head":
            head = (
                f"POST /api/auth HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 60000\r\n"
            ).encode()
            return head + b"a:b\r\n" * 12_000 + b"\r\n" + b'{"password": "' + b"a" * 59_000
        if self.kind == "negative-chunk":
            return (
                f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\n"
            ).encode()
        if self.kind == "body":
            head = (
                f"POST /api/auth HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
            ).encode()
            return head + b'{"password": "' + b"a" * 59_000
        return (f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Padding: ").encode() + b"a" * 8000

    def _connect(self, sel: selectors.BaseSelector) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setblocking(False)
        self.opened += 1
        payload = self._payload()
        if self.kind == "negative-chunk":
            s.send(payload)
            payload = b"a" * 100
        elif self.kind in ("body", "linger", "long-head"):
            head_end = payload.index(b"\r\n\r\n") + 4
            s.send(payload[:head_end])
            payload = payload[head_end:]
        self.sending[s] = [payload, 0]
        sel.register(s, selectors.EVENT_READ)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self.sending: dict[socket.socket, list] = {}
        for _ in range(self.count):
            self._connect(sel)
        next_tick = time.monotonic()
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=max(0.0, next_tick - time.monotonic())):
                if self.kind == "linger":
                    # Read the answer; once the server has shut its side, only keep sending.
                    try:
                        if key.fileobj.recv(65536):
                            continue
                    except OSError:
                        pass
                    sel.unregister(key.fileobj)
                else:
                    # The server answered or closed: drop it, open another.
                    self._replace(sel, key.fileobj)
            if time.monotonic() < next_tick:
                continue
            next_tick += 1.0 / self.rate
            while self.owed and not self.stop.is_set():
                self.owed -= 1
                try:
                    self._connect(sel)
                except OSError:
                    pass
            for sock, state in list(self.sending.items()):
                try:
                    sock.send(state[0][state[1] : state[1] + 1])
                    state[1] += 1
                except OSError:
                    self._replace(sel, sock)
        for sock in self.sending:
            sock.close()
        sel.close()

    def _replace(self, sel, sock) -> None:
        if sock in sel.get_map():
            sel.unregister(sock)
        del self.sending[sock]
        sock.close()
        self.closed_by_server += 1
        self.owed += 1

    def __enter__(self) -> SlowClients:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


class SlowReaders:
    """`count` connections that each GET `path` and read `rate` KB of it once a
    second; one the server closes (a 429, or cut off) is opened again at the
    next second's turn."""

    def __init__(self, port: int, count: int, path: str, token: str, rate: float = 1.5):
        self.port, self.count, self.path, self.token, self.rate = port, count, path, token, rate
        self.stop = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.refused = 0  # answered 429
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self, sel: selectors.BaseSelector) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", self.port))
        s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode())
        s.setblocking(False)
        self.opened += 1
        self.first[s] = True
        sel.register(s, selectors.EVENT_READ)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self.first: dict[socket.socket, bool] = {}
        for _ in range(self.count):
            self._connect(sel)
        while not self.stop.is_set():
            started = time.monotonic()
            for sock in list(self.first):
                try:
                    data = sock.recv(int(self.rate * 1024))
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if self.first[sock] and data:
                    self.first[sock] = False
                    if data.startswith(b"HTTP/1.1 429 "):
                        data = b""
                        self.refused += 1
                if not data:
                    sel.unregister(sock)
                    del self.first[sock]
                    sock.close()
                    self.closed_by_server += 1
            while len(self.first) < self.count and not self.stop.is_set():
                try:
                    self._connect(sel)
                except OSError:
                    break
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
        for sock in self.first:
            sock.close()
        sel.close()

    def __enter__(self) -> SlowReaders:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def grow_outputs(server, job_id: str, mb: int) -> None:
    """The job's outputs made `mb` MB each of random bytes (a download does not care)."""
    piece = os.urandom(1 << 20)
    job = server.job(job_id)
    with sqlite3.connect(server.data_dir / "refresher.db") as db:
        for output in (o for f in job["files"] for o in f["outputs"]):
            path = server.data_dir / "jobs" / job_id / f"{output['id']}.mp4"
            with open(path, "wb") as out:
                for _ in range(mb):
                    out.write(piece)
            db.execute("UPDATE variations SET size = ? WHERE id = ?", (path.stat().st_size, output["id"]))


def timed_get(port: int, path: str, headers: dict) -> tuple[float, int | None]:
    """One request on a new connection: (seconds, status), status None on timeout."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_LIMIT)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return time.monotonic() - started, r.status
    except (OSError, http.client.HTTPException):
        return max(CLIENT_LIMIT, time.monotonic() - started), None
    finally:
        conn.close()


def poll(port: int, job_id: str, token: str, seconds: float, pollers: int, interval: float) -> dict:
    """Each poller alternates health and status polls for `seconds`."""
    results = {"health": [], "status": []}
    failures = {"health": 0, "status": 0}
    lock = threading.Lock()
    ends_at = time.monotonic() + seconds
    targets = [("health", "/api/health", {}), ("status", f"/api/jobs/{job_id}", {"Authorization": f"Bearer {token}"})]

    def poller(index: int) -> None:
        time.sleep(interval * index / pollers)
        i = index
        while time.monotonic() < ends_at:
            name, path, headers = targets[i % 2]
            i += 1
            elapsed, status = timed_get(port, path, headers)
            with lock:
                results[name].append(elapsed)
                failures[name] += status != 200
            time.sleep(max(0.0, interval - elapsed))

    threads = [threading.Thread(target=poller, args=(i,)) for i in range(pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {name: (sorted(values), failures[name]) for name, values in results.items()}


def upload(server, clip) -> tuple[float, int | None]:
    """A real client's upload on a new connection: (seconds, status), status None on failure."""
    started = time.monotonic()
    try:
        with open(clip, "rb") as f:
            r = requests.post(
                server.url + "/api/jobs",
                files=[("videos", ("clip.mp4", f, "video/mp4"))],
                data={"variations": "1"},
                headers=dict(server.session.headers),
                timeout=30,
            )
        return time.monotonic() - started, r.status_code
    except requests.RequestException:
        return time.monotonic() - started, None


def line(label: str, values: list[float], failures: int) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<38}: p50 {percentile(ms, 0.5):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   "
        f"max {ms[-1]:7.1f} ms   (n={len(ms)}, failed {failures})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=200, help="slow connections kept open")
    parser.add_argument(
        "--kind", choices=("header", "body", "linger", "long-head", "negative-chunk", "slow-reader"), default="header"
    )
    parser.add_argument("--seconds", type=float, default=15, help="length of each measured phase")
    parser.add_argument(
        "--rate", type=float, default=None, help="bytes a second each slow client sends (1), or KB it reads (1.5)"
    )
    parser.add_argument("--pollers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--gunicorn-arg", action="append", default=[], dest="gunicorn_args")
    args = parser.parse_args()
    rate = args.rate or (1.5 if args.kind == "slow-reader" else 1.0)

    work = work_dir("refresher-bench-slow-")
    clip = make_clip(work, "clip.mp4", "320x240", 1)
    server = Server(ENCODE_WORKERS=1, HOST="127.0.0.1")
    if args.gunicorn_args:
        server.env["GUNICORN_CMD_ARGS"] = " ".join(args.gunicorn_args)
    with server:
        token = server.session.headers["Authorization"].split()[1]
        job_id = server.submit([clip], 1)
        server.wait(job_id, timeout=120)
        if args.kind == "slow-reader":
            grow_outputs(server, job_id, 50)

        baseline = poll(server.port, job_id, token, args.seconds, args.pollers, args.interval)
        base_upload = upload(server, clip)
        slow_clients = (
            SlowReaders(server.port, args.slow, f"/api/jobs/{job_id}/download", token, rate)
            if args.kind == "slow-reader"
            else SlowClients(server.port, args.slow, args.kind, rate)
        )
        with slow_clients as slow:
            time.sleep(3)  # every slow connection open and a few bytes in
            upload_result = []
            uploader = threading.Thread(
                target=lambda: (time.sleep(args.seconds / 2), upload_result.append(upload(server, clip)))
            )
            uploader.start()
            loaded = poll(server.port, job_id, token, args.seconds, args.pollers, args.interval)
            uploader.join()
        slow_upload = upload_result[0]

    what = {
        "header": "slow request heads",
        "body": "slow request bodies",
        "linger": "lingering clients",
        "long-head": "12,000-line heads, bodies trickled",
        "negative-chunk": "chunk sizes of -6",
        "slow-reader": f"ZIPs read at {rate} KB/s",
    }[args.kind]
    config = " ".join(args.gunicorn_args) or "config/gunicorn.conf.py as it is"
    print(
        f"GET /api/health and GET /api/jobs/<id>, {args.pollers} pollers every {args.interval} s, "
        f"new connection each, {CLIENT_LIMIT} s client limit ({config})"
    )
    for name in ("health", "status"):
        print(line(f"baseline  {name}, no slow connections", *baseline[name]))
        print(line(f"service   {name}, {args.slow} {what}", *loaded[name]))
    ratio = percentile(loaded["status"][0], 0.99) / max(percentile(baseline["status"][0], 0.99), 1e-9)
    print(f"  p99 ratio status slow/baseline          : {ratio:.2f}×   (target p99 < 500 ms)")
    print(
        f"  upload of a {clip.stat().st_size / 1e3:.0f} kB clip: baseline {base_upload[0]:.2f} s "
        f"(HTTP {base_upload[1]}), with slow clients {slow_upload[0]:.2f} s (HTTP {slow_upload[1]})"
    )
    print(f"  slow connections opened {slow.opened}, closed by the server {slow.closed_by_server}")
    if isinstance(slow, SlowReaders):
        print(f"  of them answered 429 {slow.refused}")


if __name__ == "__main__":
    main()
