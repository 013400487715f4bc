"""A TCP relay on loopback between a client and a server, for tests of what
a client does when its connection breaks: it counts the bytes the client
sends, can cut every connection once a number of them has passed, and can
slow the client's bytes down to a rate. A cut resets the client's side; the
server reads what was relayed, then the end of the stream, as when a
client's network goes away."""

from __future__ import annotations

import socket
import struct
import threading
import time

PIECE = 16 * 1024


class Relay:
    def __init__(self, target_port: int, rate: float | None = None):
        self.target_port = target_port
        self.rate = rate  # bytes per second from the client, None: as fast as they come
        self.sent = 0  # bytes the clients sent through
        self._cut_at: int | None = None
        self._lock = threading.Lock()
        self._open: list[tuple[socket.socket, socket.socket]] = []  # (client's side, server's side)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, count: int) -> None:
        """Once `count` more bytes have passed, every open connection is cut (once)."""
        with self._lock:
            self._cut_at = self.sent + count

    def close(self) -> None:
        self._listener.close()
        self._cut_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(PIECE):
                if from_client:
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                    with self._lock:
                        self.sent += len(data)
                        cut = self._cut_at is not None and self.sent >= self._cut_at
                        if cut:
                            self._cut_at = None
                    if cut:
                        self._cut_all()
                        return
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _cut_all(self) -> None:
        with self._lock:
            pairs, self._open = self._open, []
        for client, server in pairs:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            # closed with a reset, as a network that went away looks to the client
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
