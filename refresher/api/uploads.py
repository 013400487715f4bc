"""Receiving an upload: Werkzeug's multipart parser reads the body, and its
documented hook for file parts (`Request._get_file_stream`) writes each one
straight into a staging folder under DATA_DIR/incoming (never whole in
memory, never outside DATA_DIR), capped at MAX_UPLOAD_MB from the first byte
past the limit. The staging folder is removed when the request ends,
whatever happened, so a rejected request leaves nothing behind.

Werkzeug's own limits stay on: the body is cut off at `max_content_length`,
each text field at `max_form_memory_size`, and the form at `max_form_parts`,
here MAX_FILES files plus the MAX_FORM_PARTS text fields any form may have.
The files are counted as they begin, so the eleventh ends the request at
once with a 400; text fields are counted once the parts are read, and past
Werkzeug's part limit the request ends where it is. Werkzeug answers its
form limits with a 413, which reads as "too large": here they are a 400
naming the limits.

A part begins only once the one before it has ended, so when a file part
begins the video before it is all on disk, and the intake starts on it
(`intake.EarlyIntake`) while the rest of the body still streams in.

While the request lives it holds the staging folder (`spool`), so that a
server stopped in the middle leaves a folder the next start removes."""

from __future__ import annotations

import io
from pathlib import Path

from flask import Request, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import intake, contract, spool
from ..errors import Rejected
from ..extensions import refresher
from ..names import display_name

STAGING_KEY = "refresher.staging"
STREAMS_KEY = "refresher.staged-streams"
EARLY_KEY = "refresher.early-intake"
VIDEOS_FIELD = "videos"
UPLOAD_ENDPOINT = "jobs.create_job"


class _CappedFile(io.FileIO):
    """A file part in the staging folder, refusing to grow past the
    per-file limit. Unbuffered: a full disk shows at the write that meets
    it (507), never later when the file is closed."""

    def __init__(self, path: Path, limit: int, filename: str | None):
        super().__init__(path, "w+")
        self.path = path
        self.limit = limit
        self.written = 0
        self.filename = filename

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            limit_mb = refresher().settings.max_upload_mb
            name = display_name(self.filename)
            raise Rejected(413, f"{name} is larger than the limit of {limit_mb:g} MB (MAX_UPLOAD_MB)")
        view = memoryview(data)
        while view:  # a write to a disk that is filling up may take only part of it
            view = view[super().write(view) :]
        return len(data)

    def staged(self) -> intake.Staged:
        return intake.Staged(name=display_name(self.filename), path=self.path, size=self.written)


class UploadRequest(Request):
    """Flask's request; on the upload route each file part is written to
    DATA_DIR/incoming/<random>/ as it arrives."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.endpoint != UPLOAD_ENDPOINT:  # every other route takes at most 64 KB
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        streams = self.environ.setdefault(STREAMS_KEY, [])
        if len(streams) >= contract.MAX_FILES:
            raise Rejected(400, f"too many files: at most {contract.MAX_FILES} files per job")
        if streams:
            _arrived(streams[-1])  # a part begins only once the one before it has ended
        settings = refresher().settings
        staging = self.environ.get(STAGING_KEY)
        if staging is None:
            staging = self.environ[STAGING_KEY] = spool.create(settings.data_dir)
        stream = _CappedFile(staging.path / f"part{len(streams)}", settings.max_upload_bytes, filename)
        # kept here too: a request refused while parsing never sets request.files
        streams.append(stream)
        return stream


def _arrived(stream: _CappedFile) -> None:
    """A file's bytes are all on disk: the intake may start on it. (Which
    field a part came in is known only once the body is read: a file sent
    in another field is refused then, and what the intake did with it is
    undone with the rest.)"""
    if not (stream.filename or stream.written):
        return  # an empty file input of a form
    early = request.environ.get(EARLY_KEY)
    if early is None:
        service = refresher()
        early = request.environ[EARLY_KEY] = intake.EarlyIntake(service.settings, service.storage, service.ffmpeg)
    early.take(stream.staged())


def early_intake() -> intake.EarlyIntake | None:
    """The request's intake, which has been taking the videos as they arrived."""
    return request.environ.get(EARLY_KEY)


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
    max_fields = current_app.config["MAX_FORM_PARTS"]
    request.max_form_parts = contract.MAX_FILES + max_fields
    try:
        files = request.files  # parses the body, streaming files to the staging folder
    except RequestEntityTooLarge:
        if _body_too_large():
            raise
        # Werkzeug's form limits: the part count, or a text field's size
        field_bytes = request.max_form_memory_size or 0
        raise Rejected(
            400,
            f"too many form fields, or one too long: a job takes at most {contract.MAX_FILES} "
            f"files and {max_fields} text fields of at most "
            f"{field_bytes // 1000} KB each",
        ) from None
    fields = sum(len(values) for _, values in request.form.lists())
    if fields > max_fields:
        raise Rejected(400, f"too many form fields: {fields} sent, at most {max_fields}")
    unexpected = sorted(set(files) - {VIDEOS_FIELD})
    if unexpected:
        raise Rejected(400, f"unexpected file field {unexpected[0][:40]!r}; send videos in the 'videos' field")
    staged = []
    for upload in files.getlist(VIDEOS_FIELD):
        stream = upload.stream
        if not upload.filename and not getattr(stream, "written", 0):
            continue  # an empty file input of a form
        if not isinstance(stream, _CappedFile):
            name = display_name(upload.filename)
            raise Rejected(400, f"{name} could not be read from the request", file=name)
        staged.append(stream.staged())
        _arrived(stream)  # the body has ended, and with it the last part (taking one twice is a no-op)
    return staged, {key: request.form.getlist(key) for key in request.form}


def _body_too_large() -> bool:
    """Whether the body is over `max_content_length`: as declared, or (a
    chunked body, whose length is not declared) as read."""
    limit = request.max_content_length
    if limit is None:
        return False
    if request.content_length:
        return request.content_length > limit
    # Werkzeug's LimitedStream, which wraps a body of undeclared length
    return bool(getattr(request.stream, "is_exhausted", False))
