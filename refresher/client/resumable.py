"""Sending a file as a resumable upload (the tus 1.0 protocol the service
speaks at /api/uploads), so that a dropped connection costs only the bytes in
flight.

Each file is sent in PATCHes read from disk as they go. The first carries
10 MB; then each is sized to take about PATCH_SECONDS at the speed the last
one went (up to 100 MB), so a fast link is not held back by a round trip
and the server's wait for its last part at every 10 MB, and a slow one never
sends a PATCH that an HTTP router's time limit would cut (a cut PATCH keeps
what arrived, so its size costs nothing on a cut). Sizes are whole multiples
of the 5 MB S3 part, so that nothing waits in a tail between PATCHes. A
network error or a busy server is met by asking the server where the upload
got to (HEAD) and going on from there, a few times with growing pauses. An
upload begun is remembered (`Ledger`, in the client's config folder) by the
server, the file's real path, size and modification time, so that the same
command run again after a Ctrl-C goes on where it stopped; it is forgotten
once its job is made.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import UNREACHABLE, ClientError

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
PART_BYTES = 5 * 1024 * 1024  # PATCHes are whole multiples of the server's part size in object storage
MIN_PATCH_BYTES = 2 * PART_BYTES  # the first PATCH, and after a failure
MAX_PATCH_BYTES = 20 * PART_BYTES
PATCH_SECONDS = 5.0  # what a PATCH should take at the speed the last one went
READ_BYTES = 256 * 1024
RETRIES = 6  # attempts after a failure, with pauses of 1, 2, 4 … s
RETRY_STATUSES = (409, 423, 500, 502, 503, 504)  # out of step, busy or briefly unavailable: ask again
STALE_LEDGER_SECONDS = 7 * 24 * 3600  # entries older than this are dropped (the server expired them long ago)


def ledger_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "video-refresher" / "uploads.json"


class Ledger:
    """Uploads begun and not yet made into a job: {key: {"url", "at"}}, the
    key naming the server and the file as it was (path, size, mtime)."""

    def __init__(self, path: Path | None = None):
        self.path = path or ledger_file()

    @staticmethod
    def key(server: str, file: Path) -> str:
        info = file.stat()
        return f"{server} {os.path.realpath(file)} {info.st_size} {info.st_mtime_ns}"

    def _read(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _write(self, entries: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads-")
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1)
        os.replace(temporary, self.path)

    def find(self, key: str) -> str | None:
        entry = self._read().get(key)
        return entry.get("url") if isinstance(entry, dict) else None

    def remember(self, key: str, url: str) -> None:
        entries = {
            k: v
            for k, v in self._read().items()
            if isinstance(v, dict) and time.time() - v.get("at", 0) < STALE_LEDGER_SECONDS
        }
        entries[key] = {"url": url, "at": time.time()}
        self._write(entries)

    def forget(self, keys: list[str]) -> None:
        entries = self._read()
        if any(key in entries for key in keys):
            self._write({k: v for k, v in entries.items() if k not in keys})


class _Piece:
    """`size` bytes of a file from `start`, read as they are sent; `sent(n)` hears of each read."""

    def __init__(self, file, start: int, size: int, sent: Callable[[int], None]):
        self.file, self.left, self.sent = file, size, sent
        self.size = size
        file.seek(start)

    def __len__(self) -> int:  # requests sends it as the Content-Length
        return self.size

    def read(self, n: int = -1) -> bytes:
        want = self.left if n is None or n < 0 else min(n, self.left, READ_BYTES)
        data = self.file.read(want)
        self.left -= len(data)
        self.sent(len(data))
        return data


class Uploader:
    """Sends files to one server's /api/uploads. `request(method, url, **kw)`
    is the client's own (authenticated, errors made ClientErrors)."""

    def __init__(
        self, base_url: str, request, ledger: Ledger | None = None, pause: Callable[[float], None] = time.sleep
    ):
        self.base_url = base_url
        self.request = request
        self.ledger = ledger or Ledger()
        self.pause = pause

    def speaks_tus(self) -> bool:
        """Whether the server takes resumable uploads (an older one does not)."""
        try:
            answer = self.request("OPTIONS", "/api/uploads", authenticated=False)
        except ClientError as error:
            if error.status in (404, 405):
                return False
            raise
        return answer.headers.get("Tus-Resumable") == TUS["Tus-Resumable"]

    def send(self, file: Path, progress) -> tuple[str, str]:
        """Upload `file` (or go on with it); (upload id, its ledger key).
        `progress.reached(bytes)` hears how far it got."""
        key = Ledger.key(self.base_url, file)
        size = file.stat().st_size
        url = self.ledger.find(key)
        offset = self._offset(url) if url else None
        if url is None or offset is None:
            url = self._create(file, size)
            self.ledger.remember(key, url)
            offset = 0
        progress.reached(offset)
        failures = 0
        patch_bytes = MIN_PATCH_BYTES
        with open(file, "rb") as f:
            while offset < size:
                piece = _Piece(f, offset, min(patch_bytes, size - offset), _counter(progress, offset))
                began = time.monotonic()
                try:
                    answer = self.request(
                        "PATCH",
                        url,
                        data=piece,
                        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS},
                        read_timeout=300,  # the last PATCH waits for the server's check of the video
                    )
                    offset = int(answer.headers["Upload-Offset"])
                    failures = 0
                    patch_bytes = next_patch_bytes(len(piece), time.monotonic() - began)
                except ClientError as error:
                    patch_bytes = MIN_PATCH_BYTES
                    if not _worth_retrying(error) or failures >= RETRIES:
                        raise
                    self.pause(2**failures)
                    failures += 1
                    found = self._offset(url)
                    if found is None:
                        raise ClientError(UNREACHABLE, f"the upload of {file.name} was lost on the server") from None
                    offset = found
                progress.reached(offset)
        return url.rsplit("/", 1)[1], key

    def _create(self, file: Path, size: int) -> str:
        metadata = ",".join(
            f"{name} {base64.b64encode(value.encode()).decode()}"
            for name, value in (("filename", file.name), ("filetype", _video_type(file)))
        )
        answer = self.request(
            "POST", "/api/uploads", headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": metadata}
        )
        location = answer.headers.get("Location", "")
        if not location.startswith("/api/uploads/"):
            raise ClientError(UNREACHABLE, f"{self.base_url} did not say where the upload of {file.name} goes")
        return location

    def _offset(self, url: str) -> int | None:
        """Where the upload got to; None when the server no longer has it."""
        for attempt in range(RETRIES + 1):
            try:
                answer = self.request("HEAD", url, headers=TUS)
                return int(answer.headers["Upload-Offset"])
            except ClientError as error:
                if error.status in (404, 410):
                    return None
                if not _worth_retrying(error) or attempt == RETRIES:
                    raise
                self.pause(2**attempt)
        return None


def next_patch_bytes(sent: int, seconds: float) -> int:
    """The size of the next PATCH after one of `sent` bytes took `seconds`."""
    wanted = sent / max(seconds, 1e-3) * PATCH_SECONDS
    return min(MAX_PATCH_BYTES, max(MIN_PATCH_BYTES, int(wanted) // PART_BYTES * PART_BYTES))


def _counter(progress, start: int) -> Callable[[int], None]:
    done = [start]

    def sent(n: int) -> None:
        done[0] += n
        progress.reached(done[0])

    return sent


def _worth_retrying(error: ClientError) -> bool:
    return error.status is None and error.code == UNREACHABLE or error.status in RETRY_STATUSES


def _video_type(file: Path) -> str:
    return {".mov": "video/quicktime"}.get(file.suffix.lower(), "video/mp4")
