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
Werkzeug's part limit the request ends where it is. Werkzeug answers each of
its form limits with the same bare 413, which reads as "the request is too
large": here the parts are read by Werkzeug's sans-IO decoder
(`MultipartDecoder`) in a loop of this module's own (`_UploadParts`), so each
is a 400 that names the limit it met — a text field's size, a part's head
(a file name), the number of parts.

A part begins only once the one before it has ended, so when a file part
begins the video before it is all on disk, and the intake starts on it
(`intake.EarlyIntake`) while the rest of the body still streams in.

While the request lives it holds the staging folder (`spool`), so that a
server stopped in the middle leaves a folder the next start removes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from flask import Request, current_app, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

from .. import auth, intake, contract, spool
from ..auth import token_auth
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

    def make_form_data_parser(self) -> FormDataParser:
        if self.endpoint != UPLOAD_ENDPOINT:
            return super().make_form_data_parser()
        return _UploadFormParser(
            stream_factory=self._get_file_stream,
            max_form_memory_size=self.max_form_memory_size,
            max_content_length=self.max_content_length,
            max_form_parts=self.max_form_parts,
            cls=self.parameter_storage_class,
        )

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.endpoint != UPLOAD_ENDPOINT:  # every other route takes at most 64 KB
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        if filename is not None and len(filename) > contract.MAX_SENT_FILE_NAME_LENGTH:
            raise Rejected(400, _file_name_too_long(f"{len(filename)} characters"))
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


class _UploadFormParser(FormDataParser):
    """Werkzeug's form parser, whose multipart bodies `_UploadParts` reads."""

    def parse(self, stream, mimetype, content_length, options=None):
        boundary = (options or {}).get("boundary", "").encode("ascii", "replace")
        if mimetype != "multipart/form-data" or not boundary:
            return super().parse(stream, mimetype, content_length, options)
        parts = _UploadParts(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        try:
            form, files = parts.parse(stream, boundary, content_length)
        except ValueError:  # malformed: as Werkzeug's silent parser, no fields and no files
            return stream, self.cls(), self.cls()
        return stream, form, files


class _UploadParts(MultiPartParser):
    """Reads a multipart body through Werkzeug's decoder, as its own parser
    does, except that each form limit, which Werkzeug raises as one bare
    413, is a 400 naming the limit met. A RequestEntityTooLarge from the
    stream itself (the body past `max_content_length`) goes on as it is."""

    def parse(self, stream, boundary, content_length):
        field_limit = self.max_form_memory_size
        decoder = MultipartDecoder(boundary, max_form_memory_size=field_limit, max_parts=self.max_form_parts)
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileStorage]] = []
        part: Field | File | None = None
        value: list[bytes] = []  # a text field's bytes so far
        size = 0
        out: IO[bytes] | None = None  # where a file part is written
        while True:
            data = stream.read(self.buffer_size)  # (past max_content_length: Werkzeug's 413, as it is)
            try:
                decoder.receive_data(data or None)
                event = decoder.next_event()
                while not isinstance(event, (Epilogue, NeedData)):
                    if isinstance(event, Field):
                        part, value, size = event, [], 0
                    elif isinstance(event, File):
                        part, out = event, self.start_file_streaming(event, content_length)
                    elif isinstance(event, Data) and isinstance(part, Field):
                        size += len(event.data)
                        if field_limit is not None and size > field_limit:
                            raise Rejected(400, _field_too_long(part.name, field_limit))
                        value.append(event.data)
                        if not event.more_data:
                            fields.append(
                                (part.name, b"".join(value).decode(self.get_part_charset(part.headers), "replace"))
                            )
                            part = None
                    elif isinstance(event, Data) and isinstance(part, File) and out is not None:
                        out.write(event.data)
                        if not event.more_data:
                            out.seek(0)
                            files.append((part.name, FileStorage(out, part.filename, part.name, headers=part.headers)))
                            part = out = None
                    event = decoder.next_event()
            except RequestEntityTooLarge:
                raise Rejected(400, _form_limit_met(decoder, part, field_limit, self.max_form_parts)) from None
            if not data:
                return self.cls(fields), self.cls(files)


def _field_too_long(name: str | None, limit: int) -> str:
    shown = display_name(name)[:40] if name else "a text field"
    return f"the text field {shown!r} is larger than the limit of {limit // 1000} KB for a text field"


def _file_name_too_long(length: str) -> str:
    return (
        f"a file name of {length} was sent; file names of at most "
        f"{contract.MAX_SENT_FILE_NAME_LENGTH} characters are accepted"
    )


def _form_limit_met(decoder: MultipartDecoder, part, field_limit: int | None, max_parts: int | None) -> str:
    """Which of Werkzeug's form limits the decoder met, as a sentence."""
    if decoder.state is State.DATA_START and max_parts is not None:  # a part begun past the count
        return (
            f"too many form fields: a job takes at most {contract.MAX_FILES} files and "
            f"{max_parts - contract.MAX_FILES} text fields"
        )
    if isinstance(part, Field):  # more of the field than the limit arrived at once
        return _field_too_long(part.name, field_limit or 0)
    if decoder.state is State.PART:  # a part's head never ended within the limit
        return _file_name_too_long(f"more than {(field_limit or 0) // 1000} KB")
    where = "after its last part" if decoder.state is State.EPILOGUE else "before its first part"
    return f"the form has more than the limit of {(field_limit or 0) // 1000} KB {where}"


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
        early = request.environ[EARLY_KEY] = intake.EarlyIntake(
            service.settings, service.storage, service.ffmpeg, client=_client()
        )
    early.take(stream.staged())


def _client() -> str:
    """Who sent the upload, as the probe slots tell clients apart: its API
    token or its session (`auth.caller_key`, as for downloads and streams)."""
    return auth.caller_key(token_auth.current_user())


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
    files = request.files  # parses the body, streaming files to the staging folder
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
