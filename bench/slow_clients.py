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
  size is `-6` (a hand-written chunk parser looped on it for good).

When the server closes one, it connects again at the next byte's turn, so
`--slow` of them stay open for the whole phase (as an attacker would keep
them). `--rate` is how many bytes a second each sends (1 by default). Meanwhile
`--pollers` clients each poll health and a job's status every `--interval`
seconds on a new connection per request, giving up after 2.5 s (a timeout
counts as 2.5 s), and one real upload is sent; the same upload without slow
clients is the baseline.

    python -m bench.slow_clients [--slow 200] [--kind header|body|linger|long-head|negative-chunk]
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
import selectors
import socket
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
    parser.add_argument("--kind", choices=("header", "body", "linger", "long-head", "negative-chunk"), default="header")
    parser.add_argument("--seconds", type=float, default=15, help="length of each measured phase")
    parser.add_argument("--rate", type=float, default=1.0, help="bytes a second each slow client sends")
    parser.add_argument("--pollers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--gunicorn-arg", action="append", default=[], dest="gunicorn_args")
    args = parser.parse_args()

    work = work_dir("refresher-bench-slow-")
    clip = make_clip(work, "clip.mp4", "320x240", 1)
    server = Server(ENCODE_WORKERS=1, HOST="127.0.0.1")
    if args.gunicorn_args:
        server.env["GUNICORN_CMD_ARGS"] = " ".join(args.gunicorn_args)
    with server:
        token = server.session.headers["Authorization"].split()[1]
        job_id = server.submit([clip], 1)
        server.wait(job_id, timeout=120)

        baseline = poll(server.port, job_id, token, args.seconds, args.pollers, args.interval)
        base_upload = upload(server, clip)
        with SlowClients(server.port, args.slow, args.kind, args.rate) as slow:
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


if __name__ == "__main__":
    main()
