"""The service's HTTP API as Python calls, over `requests`.

Uploads stream from disk through a multipart encoder (a file is never read
whole into memory) and report their progress; downloads stream to a
temporary file beside the destination and are renamed into place only when
complete. Every failure becomes a `ClientError` with a message a person can
act on and an exit code a script can test.
"""

from __future__ import annotations

import mimetypes
import os
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import requests

from .errors import AUTH, UNREACHABLE, USAGE, ClientError, code_for_http_status
from .resumable import Ledger, Uploader

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
# After the last byte of an upload the server probes every file with ffmpeg.
UPLOAD_READ_TIMEOUT = 300
# A cancel answers once the job's ffmpeg processes have stopped (seconds at most).
CANCEL_READ_TIMEOUT = 120
CHUNK_SIZE = 256 * 1024

VIDEO_TYPES = {".mov": "video/quicktime", ".mp4": "video/mp4", ".m4v": "video/mp4"}


class TransferProgress(Protocol):
    """What an upload or a download reports its progress to (the CLI's
    `progress.Transfer`): `reached(bytes moved so far)`."""

    def reached(self, done: int) -> None: ...


# start_transfer(total bytes) → a context manager giving the TransferProgress of that many bytes
StartTransfer = Callable[[int], AbstractContextManager[TransferProgress]]


def _network_reason(exc: Exception) -> str:
    """'Connection refused' rather than urllib3's nested repr."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip() if found else exc.__class__.__name__


# OpenSSL's words for a TLS handshake answered by something that is not TLS.
_PLAIN_HTTP_ANSWER = re.compile(r"WRONG_VERSION_NUMBER|wrong version number|record layer failure|http request", re.I)


def _tls_reason(exc: Exception) -> str:
    found = re.findall(r"\[SSL: [A-Z_]+\] ([^(')\]]+)", str(exc))
    return found[-1].strip() if found else exc.__class__.__name__


def _filename_from(disposition: str | None) -> str | None:
    match = re.search(r'filename="?([^";]+)"?', disposition or "")
    return Path(match.group(1)).name if match else None


def refuse_existing(destination: Path) -> None:
    """A download never replaces a file unless told to (`--force`)."""
    if destination.exists() and not destination.is_dir():
        raise ClientError(USAGE, f"{destination} already exists: pass --force to replace it")


class Server:
    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.token = token
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "video-refresher-client"

    @property
    def _tls(self) -> bool:
        return self.url.lower().startswith("https://")

    # --- plumbing ----------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, authenticated: bool = True, read_timeout: float = READ_TIMEOUT, **kwargs
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if authenticated:
            if not self.token:
                raise ClientError(
                    AUTH,
                    "no token: pass --token, set REFRESHER_TOKEN, or run `python -m refresher.client login --save`",
                )
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.request(
                method, self.url + path, headers=headers, timeout=(CONNECT_TIMEOUT, read_timeout), **kwargs
            )
        except requests.exceptions.Timeout:
            hint = " (a server that speaks plain HTTP there never answers HTTPS: try http://)" if self._tls else ""
            raise ClientError(UNREACHABLE, f"{self.url} did not answer in time{hint}") from None
        except requests.exceptions.SSLError as exc:
            if _PLAIN_HTTP_ANSWER.search(str(exc)):
                raise ClientError(
                    UNREACHABLE,
                    f"{self.url} does not speak HTTPS: the server there answered in plain HTTP; "
                    f"use {self.url.replace('https://', 'http://', 1)}",
                ) from None
            raise ClientError(UNREACHABLE, f"no secure connection to {self.url}: {_tls_reason(exc)}") from None
        except requests.exceptions.InvalidHeader:
            raise ClientError(AUTH, "the token cannot be sent: it has a line break or control character") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise ClientError(USAGE, f"{self.url} is not a server address: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            raise ClientError(UNREACHABLE, f"cannot reach {self.url}: {_network_reason(exc)}") from None
        if response.status_code >= 400:
            self._raise_for(response, authenticated)
        return response

    def _raise_for(self, response: requests.Response, authenticated: bool = True):
        body = None
        try:
            body = response.json()
        except ValueError:
            pass
        message = body.get("error") if isinstance(body, dict) else None
        status = response.status_code
        if not message:
            if status == 404:
                raise ClientError(
                    UNREACHABLE,
                    f"{response.url} is not found; is {self.url} the Video Refresher service? (HTTP 404)",
                    status,
                )
            message = f"the server answered {response.reason or 'an error'}"
        if status == 401 and authenticated:
            message += "; log in again (`login --save`) or check REFRESHER_TOKEN"
        elif status == 401:
            message = f"the password was refused ({message}): check it and run `login` again"
        raise ClientError(
            code_for_http_status(status), f"{message} (HTTP {status})", status, body if isinstance(body, dict) else None
        )

    def _json(self, response: requests.Response):
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                UNREACHABLE, f"{self.url} did not answer with JSON; is it the Video Refresher service?"
            ) from None

    @staticmethod
    def _job_path(job_id: str, suffix: str = "") -> str:
        return f"/api/jobs/{quote(job_id, safe='')}{suffix}"

    # --- the API -------------------------------------------------------------------

    def login(self, password: str) -> dict:
        """{"token", "expiresAt"} for the shared password."""
        return self._json(self._request("POST", "/api/auth", authenticated=False, json={"password": password}))

    def logout(self, every_session: bool = False) -> None:
        """End this token's session on the server (with `every_session`, every session)."""
        self._request("DELETE", "/api/auth", params={"all": "1"} if every_session else None)

    def check_token(self) -> None:
        """A cheap authenticated call, so a bad token fails before a long upload."""
        self._request("GET", "/api/jobs", params={"limit": 1})

    def create_job(
        self,
        paths: list[Path],
        variations: int,
        seed: str | None,
        start_transfer: StartTransfer,
        name: str | None = None,
        webhook_url: str | None = None,
    ) -> dict:
        """Upload `paths` as one job. `start_transfer(total_bytes)` returns a
        context manager whose `reached(bytes_sent)` is called as the upload goes."""
        from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

        with ExitStack() as stack:
            fields: list[tuple[str, str | tuple[str, BinaryIO, str]]] = [("variations", str(variations))]
            if seed is not None:
                fields.append(("seed", seed))
            if name is not None:
                fields.append(("name", name))
            if webhook_url is not None:
                fields.append(("webhookUrl", webhook_url))
            for path in paths:
                content_type = VIDEO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                fields.append(
                    (
                        "videos",
                        (path.name, stack.enter_context(open(path, "rb")), content_type or "application/octet-stream"),
                    )
                )
            encoder = MultipartEncoder(fields=fields)
            transfer = stack.enter_context(start_transfer(encoder.len))
            monitor = MultipartEncoderMonitor(encoder, lambda m: transfer.reached(m.bytes_read))
            response = self._request(
                "POST",
                "/api/jobs",
                data=monitor,
                headers={"Content-Type": monitor.content_type},
                read_timeout=UPLOAD_READ_TIMEOUT,
            )
        return self._json(response)

    def uploader(self, ledger: Ledger | None = None) -> Uploader:
        """Resumable uploads to this server (see `resumable`)."""
        return Uploader(self.url, self._request, ledger)

    def create_job_from_uploads(
        self,
        upload_ids: list[str],
        variations: int,
        seed: str | None,
        name: str | None = None,
        webhook_url: str | None = None,
    ) -> dict:
        """A job whose sources are these finished resumable uploads."""
        body: dict = {"uploads": upload_ids, "variations": variations}
        body.update({k: v for k, v in (("seed", seed), ("name", name), ("webhookUrl", webhook_url)) if v is not None})
        return self._json(self._request("POST", "/api/jobs", json=body, read_timeout=UPLOAD_READ_TIMEOUT))

    def job(self, job_id: str) -> dict:
        return self._json(self._request("GET", self._job_path(job_id)))

    def jobs(self, limit: int | None = None, status: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("limit", limit), ("status", status)) if v is not None}
        return self._json(self._request("GET", "/api/jobs", params=params))

    def cancel(self, job_id: str) -> dict:
        """{"jobId","status","completedVariations","totalVariations","cancelledAt"};
        a job that had already finished raises a ClientError with HTTP 409."""
        return self._json(self._request("POST", self._job_path(job_id, "/cancel"), read_timeout=CANCEL_READ_TIMEOUT))

    def retry(self, job_id: str) -> dict:
        """The job, queued again; HTTP 409 when it has no failed variations or is not finished."""
        return self._json(self._request("POST", self._job_path(job_id, "/retry")))

    def resume(self, job_id: str) -> dict:
        """The job, queued again; HTTP 409 when it is not cancelled."""
        return self._json(self._request("POST", self._job_path(job_id, "/resume")))

    def rerun(self, job_id: str, variations: int | None, seed: str | None, name: str | None) -> dict:
        """A new job from the same sources (the new job, as GET /api/jobs/<id> shows it)."""
        options = {k: v for k, v in (("variations", variations), ("seed", seed), ("name", name)) if v is not None}
        return self._json(
            self._request("POST", self._job_path(job_id, "/rerun"), json=options, read_timeout=UPLOAD_READ_TIMEOUT)
        )

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its files; HTTP 409 while it is queued or processing."""
        self._request("DELETE", self._job_path(job_id))

    def download(
        self, job_id: str, destination: Path | None, start_transfer: StartTransfer, overwrite: bool = False
    ) -> Path:
        """Save the job's ZIP to `destination` (default: the server's file name in
        the current folder) and return where it went. A file already there is
        replaced only with `overwrite`; else a ClientError, and nothing is
        downloaded."""
        response = self._request("GET", self._job_path(job_id, "/download"), stream=True)
        with response:
            total = int(response.headers.get("Content-Length") or 0)
            if destination is None:
                destination = Path(
                    _filename_from(response.headers.get("Content-Disposition")) or f"refresher-{job_id}.zip"
                )
            elif destination.is_dir():
                destination = destination / (
                    _filename_from(response.headers.get("Content-Disposition")) or f"refresher-{job_id}.zip"
                )
            if not overwrite:
                refuse_existing(destination)
            # Same folder as the destination, so the final rename is atomic.
            partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
            try:
                received = 0
                with open(partial, "xb") as out, start_transfer(total) as transfer:
                    for chunk in response.iter_content(CHUNK_SIZE):
                        out.write(chunk)
                        received += len(chunk)
                        transfer.reached(received)
                if total and received != total:
                    raise ClientError(UNREACHABLE, f"the download stopped after {received} of {total} bytes")
                if overwrite:
                    os.replace(partial, destination)
                else:
                    try:
                        os.link(partial, destination)  # never replaces: a file that appeared meanwhile stays
                    except FileExistsError:
                        refuse_existing(destination)
                    except OSError:  # a file system without hard links: checked, then renamed
                        refuse_existing(destination)
                        os.replace(partial, destination)
            except requests.exceptions.RequestException as exc:
                raise ClientError(UNREACHABLE, f"the download was cut off: {_network_reason(exc)}") from None
            except OSError as exc:
                raise ClientError(USAGE, f"cannot write {destination}: {exc.strerror or exc}") from None
            finally:
                partial.unlink(missing_ok=True)
        return destination
