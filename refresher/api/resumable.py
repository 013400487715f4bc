"""/api/uploads: resumable uploads over the tus 1.0 protocol (the rules are in
`refresher.resumable`). OPTIONS is open, as the protocol needs; every other
request needs a token like every /api route, and `Tus-Resumable: 1.0.0`.

A PATCH's body is read as it arrives, a piece at a time, and stored at once:
never whole in memory. When the client goes away in the middle, what came is
kept, and HEAD tells the client where to go on from."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .. import auth, resumable
from ..auth import token_auth
from ..errors import Rejected
from ..extensions import refresher

bp = Blueprint("resumable", __name__, url_prefix="/api/uploads")

RECEIVING_ENDPOINTS = ("resumable.create_upload", "resumable.receive")  # the routes that take a large body


@bp.before_request
def require_token_and_version():
    if request.method == "OPTIONS":
        return None
    return _checked()


@token_auth.login_required
def _checked():
    if request.headers.get("Tus-Resumable") != resumable.TUS_VERSION:
        raise Rejected(412, f"send Tus-Resumable: {resumable.TUS_VERSION}; it is the only version spoken here")
    return None


@bp.after_request
def tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = resumable.TUS_VERSION
    if response.status_code == 412:
        response.headers["Tus-Version"] = resumable.TUS_VERSION
    return response


def _answer(status: int, row: dict | None = None, headers: dict[str, str] | None = None) -> Response:
    response = Response(status=status)
    del response.headers["Content-Type"]  # no body
    if row is not None:
        response.headers["Upload-Offset"] = str(row["received"])
        if not resumable.is_complete(row):
            response.headers["Upload-Expires"] = resumable.expires_header(row)
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("", methods=["OPTIONS"], provide_automatic_options=False)
@bp.route("/<upload_id>", methods=["OPTIONS"], provide_automatic_options=False)
def options(upload_id: str | None = None):
    return _answer(204, headers=resumable.protocol_headers(refresher().settings))


@bp.post("")
def create_upload():
    """creation (and creation-with-upload: a first piece of the body along)."""
    service = refresher()
    length = resumable.parse_length(request.headers.get("Upload-Length"), service.settings)
    row = resumable.create(
        service.store, service.settings, service.storage, length, request.headers.get("Upload-Metadata")
    )
    headers = {"Location": f"/api/uploads/{row['id']}"}
    if request.mimetype == resumable.OCTET_STREAM and _has_body():
        row = _receive(row["id"], 0)
    return _answer(201, row, headers)


@bp.route("/<upload_id>", methods=["HEAD"])
def status(upload_id: str):
    row = resumable.find(refresher().store, upload_id)
    headers = {"Upload-Length": str(row["length"])}
    if row["metadata"]:
        headers["Upload-Metadata"] = row["metadata"]
    return _answer(200, row, headers)


@bp.route("/<upload_id>", methods=["PATCH"])
def receive(upload_id: str):
    if request.mimetype != resumable.OCTET_STREAM:
        raise Rejected(415, f"send the bytes of a PATCH as {resumable.OCTET_STREAM}")
    row = _receive(upload_id, resumable.parse_offset(request.headers.get("Upload-Offset")))
    return _answer(204, row)


@bp.delete("/<upload_id>")
def terminate(upload_id: str):
    service = refresher()
    resumable.terminate(service.store, service.settings, service.storage, upload_id)
    return _answer(204)


def _has_body() -> bool:
    return bool(request.content_length) or request.headers.get("Transfer-Encoding", "").lower() == "chunked"


def _receive(upload_id: str, offset: int) -> dict:
    service = refresher()
    return resumable.receive(
        service.store,
        service.settings,
        service.storage,
        service.ffmpeg,
        upload_id,
        offset,
        _body(),
        request.content_length,
        client=auth.caller_key(token_auth.current_user()),  # its probe takes this client's probe slot
    )


def _body():
    """The request body, a piece at a time as it arrives."""
    stream = request.stream
    while chunk := stream.read(resumable.READ_BYTES):
        yield chunk
