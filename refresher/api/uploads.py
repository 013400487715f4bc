"""Receiving an upload: Werkzeug's multipart parser streams each file part
straight into a staging folder under DATA_DIR/incoming (never whole in
memory, never outside DATA_DIR), each capped at MAX_UPLOAD_MB from the first
byte past the limit. The staging folder is removed when the request ends,
whatever happened, so a rejected request leaves nothing behind.

The parser also counts the parts as they arrive: the eleventh file, or one
text field too many, ends the request with a 400 naming the limit (Werkzeug's
own MAX_FORM_PARTS check would answer 413, which reads as "too large").

While the request lives it holds the staging folder (`spool`), so that a
server stopped in the middle leaves a folder the next start removes."""
from __future__ import annotations

import io
import os
from pathlib import Path

from flask import Request, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser

from .. import intake, contract, spool
from ..errors import Rejected
from ..extensions import refresher
from ..names import display_name

STAGING_KEY = "refresher.staging"
STREAMS_KEY = "refresher.staged-streams"
EARLY_KEY = "refresher.early-intake"
VIDEOS_FIELD = "videos"


class _CappedFile(io.BufferedRandom):
    """A staging file that refuses to grow past the per-file limit."""

    def __init__(self, path: Path, limit: int, filename: str | None):
        super().__init__(io.FileIO(path, "w+"))
        self.limit = limit
        self.written = 0
        self.filename = filename
        self.field: str | None = None   # the form field it came in

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            limit_mb = refresher().settings.max_upload_mb
            name = display_name(self.filename)
            raise RequestEntityTooLarge(f"{name} is larger than the limit of {limit_mb:g} MB (MAX_UPLOAD_MB)")
        return super().write(data)


class _CountingMultiPartParser(MultiPartParser):
    """Werkzeug's streaming multipart parser, stopping at the first part over
    the limits: more than MAX_FILES files, or more than `max_fields` text
    fields (each is held in memory, up to MAX_FORM_MEMORY_SIZE)."""

    def __init__(self, *args, max_fields: int | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_fields = max_fields
        self.files = self.fields = 0
        self.current = None

    def start_file_streaming(self, event, total_content_length):
        self.arrived(self.current)  # a part starts only once the one before it has ended
        self.files += 1
        if self.files > contract.MAX_FILES:
            raise Rejected(400, f"too many files: at most {contract.MAX_FILES} files per job")
        stream = super().start_file_streaming(event, total_content_length)
        if isinstance(stream, _CappedFile):
            stream.field = event.name
            self.current = stream
        return stream

    def arrived(self, stream) -> None:
        """A video's bytes are all on disk: the intake may start on it."""
        if stream is None or stream.field != VIDEOS_FIELD or not (stream.filename or stream.written):
            return
        if request.endpoint != "jobs.create_job":
            return
        stream.flush()
        early = request.environ.get(EARLY_KEY)
        if early is None:
            service = refresher()
            early = request.environ[EARLY_KEY] = intake.EarlyIntake(service.settings, service.storage,
                                                                     service.ffmpeg)
        early.take(_staged(stream))

    def get_part_charset(self, headers):
        # Called once for each text field, as soon as it has been read.
        self.fields += 1
        if self.max_fields is not None and self.fields > self.max_fields:
            raise Rejected(400, f"too many form fields: at most {self.max_fields}")
        return super().get_part_charset(headers)


class _FormDataParser(FormDataParser):
    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = _CountingMultiPartParser(stream_factory=self.stream_factory,
                                          max_form_memory_size=self.max_form_memory_size, cls=self.cls,
                                          max_fields=self.max_form_parts)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        parser.arrived(parser.current)
        return stream, form, files


class UploadRequest(Request):
    """Flask's request, with file parts written to DATA_DIR/incoming/<random>/."""

    form_data_parser_class = _FormDataParser

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        settings = refresher().settings
        staging = self.environ.get(STAGING_KEY)
        if staging is None:
            staging = self.environ[STAGING_KEY] = spool.create(settings.data_dir)
        path = staging.path / f"part{len(os.listdir(staging.path))}"
        stream = _CappedFile(path, settings.max_upload_bytes, filename)
        # kept here too: a request refused while parsing never sets request.files
        self.environ.setdefault(STREAMS_KEY, []).append(stream)
        return stream


def early_intake() -> "intake.EarlyIntake | None":
    """The request's intake, which has been taking the videos as they arrived."""
    return request.environ.get(EARLY_KEY)


def _staged(stream: _CappedFile) -> intake.Staged:
    return intake.Staged(name=display_name(stream.filename), path=Path(stream.raw.name), size=stream.written)


def remove_staging(exc: BaseException | None = None) -> None:
    """teardown_request: let the intake finish (deleting what it stored for a
    job that was not created), close the parts and remove the staging folder."""
    early = request.environ.pop(EARLY_KEY, None)
    if early is not None:
        early.close()
    for stream in request.environ.pop(STREAMS_KEY, []):
        stream.close()
    staging = request.environ.pop(STAGING_KEY, None)
    if staging is not None:
        staging.remove()


def staged_videos() -> tuple[list[intake.Staged], dict[str, list[str]]]:
    """The uploaded videos (on disk, in the staging folder) and the form fields."""
    if request.mimetype != "multipart/form-data":
        raise Rejected(415, "send the videos as multipart/form-data in the 'videos' field")
    files = request.files  # parses the body, streaming files to the staging folder
    unexpected = sorted(set(files) - {"videos"})
    if unexpected:
        raise Rejected(400, f"unexpected file field {unexpected[0][:40]!r}; send videos in the 'videos' field")
    staged = []
    for upload in files.getlist("videos"):
        stream = upload.stream
        if not upload.filename and not getattr(stream, "written", 0):
            continue  # an empty file input of a form
        name = display_name(upload.filename)
        if not isinstance(stream, _CappedFile):
            raise Rejected(400, f"{name} could not be read from the request", file=name)
        stream.flush()
        staged.append(_staged(stream))
    return staged, {key: request.form.getlist(key) for key in request.form}
