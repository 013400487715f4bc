"""The OpenAPI 3.1 description of the HTTP API, served at GET /api/openapi.json.

tests/test_openapi.py holds it to the implementation: schemathesis generates
requests for every operation, and real jobs are checked end to end, so a
route, status code or field that changes on one side and not the other
fails the suite.
"""

from __future__ import annotations

from .. import __version__, contract, rules

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _err(description: str) -> dict:
    return _json(_ERROR, description)


def _header(description: str, schema: dict | None = None, required: bool = True) -> dict:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def _too_many(description: str) -> dict:
    return _json(_ERROR, description, {"Retry-After": _header("seconds", {"type": "integer"})})


def _binary(media_type: str, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}
    if headers:
        response["headers"] = headers
    return response


_REDIRECT = {
    "description": "with STORAGE_URL (object storage): the file is at a presigned URL of the "
    "bucket, valid 300 s, which answers Range requests and carries the file's type "
    "and name; send no Authorization header there",
    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}, "required": True}},
}
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_JOB_STATUS = {"type": "string", "enum": list(rules.JOB_STATUSES)}
_JOB_ID_PARAM = {"name": "jobId", "in": "path", "required": True, "schema": _ID}
_AUTH_ERRORS = {
    "401": _json(_ERROR, "missing, invalid, expired or revoked bearer token", {"WWW-Authenticate": _header("Bearer")})
}
_OCTETS = "application/offset+octet-stream"
_BYTES = {"type": "integer", "minimum": 0}
_UPLOAD_ID_PARAM = {"name": "uploadId", "in": "path", "required": True, "schema": _ID}
_TUS_RESUMABLE = {"name": "Tus-Resumable", "in": "header", "required": True, "schema": {"enum": ["1.0.0"]}}
_UPLOAD_ERRORS = {
    "400": _err("a header is missing or malformed"),
    "412": _err("Tus-Resumable is not 1.0.0"),
    "413": _err("above Tus-Max-Size (MAX_UPLOAD_MB) or STORAGE_LIMIT_MB, or bytes beyond Upload-Length"),
    "415": _err("the bytes are not sent as application/offset+octet-stream"),
    **_AUTH_ERRORS,
}
# 409 answers name the job's status, so a client knows what to do next.
_STATUS_CONFLICT = {
    "allOf": [_ERROR, {"type": "object", "required": ["status"], "properties": {"status": _JOB_STATUS}}]
}
_TOKEN_NAME = {
    "type": "string",
    "minLength": contract.MIN_TOKEN_NAME_LENGTH,
    "maxLength": contract.MAX_TOKEN_NAME_LENGTH,
}
_JOB_NAME = {
    "type": "string",
    "maxLength": contract.MAX_JOB_NAME_LENGTH,
    "description": f"{contract.MIN_JOB_NAME_LENGTH}-{contract.MAX_JOB_NAME_LENGTH} printable characters "
    f"(no control or format characters); blank means none: the job is then named "
    f"after its files",
}
_REVISION = {
    "type": "integer",
    "minimum": 0,
    "description": "grows with every change of the job (its status, progress or counts of variations); "
    "of two answers about one job, the one with the higher revision is the newer. A "
    "finished job may go back to queued (retry, resume): compare revisions, not statuses",
}
_WEBHOOK_URL = {
    "type": "string",
    "format": "uri",
    "maxLength": 2048,
    "description": "http(s) URL of a public address that gets one POST, signed per Standard Webhooks with "
    "WEBHOOK_SECRET, when the job ends: {type: job.completed | job.failed | job.cancelled, timestamp, data: the job}",
}
_BAD_JOB_NAME = f"a name that is not {contract.MIN_JOB_NAME_LENGTH}-{contract.MAX_JOB_NAME_LENGTH} printable characters"
# One Server-Sent Event: `data` is the job's JSON; a job deleted meanwhile ends
# the stream with an event named "deleted", a token signed out or revoked with
# one named "signed-out" (its data an Error).
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["message", "deleted", "signed-out"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Job"},
        },
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": True,
    },
    "Output": {
        "type": "object",
        "required": ["id", "variationIndex", "name", "size", "url", "effects"],
        "properties": {
            "id": {"type": "string"},
            "variationIndex": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "size": {"type": ["integer", "null"]},
            "url": {"type": "string"},
            "effects": {"type": "object"},
        },
    },
    "JobFile": {
        "type": "object",
        "required": ["id", "name", "size", "status", "progress", "completedVariations", "error", "outputs"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "size": {"type": "integer"},
            "durationSeconds": {"type": ["number", "null"]},
            "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]},
            "hasAudio": {"type": ["boolean", "null"]},
            "status": _JOB_STATUS,
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "completedVariations": {"type": "integer"},
            "totalVariations": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Output"}},
        },
    },
    "Job": {
        "type": "object",
        "required": [
            "jobId",
            "name",
            "status",
            "revision",
            "overallProgress",
            "totalVideos",
            "totalVariations",
            "completedVariations",
            "seed",
            "files",
            "createdAt",
            "expiresAt",
            "error",
        ],
        "properties": {
            "jobId": {"type": "string"},
            "name": {"type": "string"},
            "status": _JOB_STATUS,
            "revision": _REVISION,
            "overallProgress": {"type": "integer", "minimum": 0, "maximum": 100},
            "totalVideos": {"type": "integer"},
            "totalVariations": {"type": "integer"},
            "completedVariations": {"type": "integer"},
            "variationsPerVideo": {"type": "integer"},
            "failedVariations": {
                "type": "integer",
                "description": "variations that failed for good (POST .../retry queues them again)",
            },
            "seed": {"type": "string"},
            "thumbnailUrl": {"type": ["string", "null"]},
            "downloadUrl": {"type": ["string", "null"]},
            "files": {"type": "array", "items": {"$ref": "#/components/schemas/JobFile"}},
            "createdAt": _TIME,
            "startedAt": _NULLABLE_TIME,
            "finishedAt": _NULLABLE_TIME,
            "cancelledAt": _NULLABLE_TIME,
            "expiresAt": _TIME,
            "error": {"type": ["string", "null"]},
            "webhook": {
                "oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Webhook"}],
                "description": "how the announcement of the job's end went; null when the job has no webhookUrl",
            },
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["url", "deliveredAt", "attempts", "lastError"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "deliveredAt": _NULLABLE_TIME,
            "attempts": {"type": "integer", "minimum": 0, "description": "attempts made so far (the same webhook-id)"},
            "lastError": {"type": ["string", "null"], "description": "what the latest failed attempt met"},
        },
    },
    "JobSummary": {
        "type": "object",
        "required": [
            "id",
            "name",
            "status",
            "revision",
            "totalVideos",
            "totalVariations",
            "completedVariations",
            "overallProgress",
            "fileNames",
            "thumbnailUrl",
            "createdAt",
            "expiresAt",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "status": _JOB_STATUS,
            "revision": _REVISION,
            "totalVideos": {"type": "integer"},
            "totalVariations": {"type": "integer"},
            "completedVariations": {"type": "integer"},
            "overallProgress": {"type": "integer", "minimum": 0, "maximum": 100},
            "fileNames": {"type": "array", "items": {"type": "string"}},
            "thumbnailUrl": {"type": ["string", "null"]},
            "createdAt": _TIME,
            "finishedAt": _NULLABLE_TIME,
            "cancelledAt": _NULLABLE_TIME,
            "expiresAt": _TIME,
            "error": {"type": ["string", "null"]},
        },
    },
    "JobCreated": {
        "type": "object",
        "required": ["jobId", "name", "status", "variationsPerVideo", "totalVariations", "files", "statusUrl"],
        "properties": {
            "jobId": {"type": "string"},
            "name": {"type": "string"},
            "status": {"const": "queued"},
            "variationsPerVideo": {"type": "integer"},
            "totalVariations": {"type": "integer"},
            "seed": {"type": "string"},
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "size"],
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "size": {"type": "integer"}},
                },
            },
            "statusUrl": {"type": "string"},
        },
    },
    "CancelResult": {
        "type": "object",
        "required": ["jobId", "status", "revision", "completedVariations", "totalVariations", "cancelledAt"],
        "properties": {
            "jobId": {"type": "string"},
            "status": _JOB_STATUS,
            "revision": _REVISION,
            "completedVariations": {"type": "integer"},
            "totalVariations": {"type": "integer"},
            "cancelledAt": _NULLABLE_TIME,
        },
    },
    "Token": {
        "type": "object",
        "required": ["id", "name", "createdAt", "lastUsedAt"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "createdAt": _TIME,
            "lastUsedAt": _NULLABLE_TIME,
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "supervisor", "queue", "warnings"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": {"type": "string"},
            "supervisor": {
                "type": "string",
                "enum": ["running", "standby", "not running", "elsewhere"],
                "description": "this process's own supervisor; 'elsewhere' in a web process that "
                "encodes nothing (ENCODE_WORKERS=0)",
            },
            "queue": {
                "type": "object",
                "required": ["queued", "processing"],
                "properties": {"queued": {"type": "integer"}, "processing": {"type": "integer"}},
            },
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what does not stop this process from serving, e.g. no worker host",
            },
            "reason": {"type": "string", "description": "why it is degraded"},
            "ffmpeg": {"type": ["string", "null"], "description": "only with a token"},
            "hosts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the encoding hosts whose heartbeat is recent; only with a token",
            },
            "disk": {
                "type": "object",
                "required": ["usedBytes", "limitBytes"],
                "description": "only with a token",
                "properties": {"usedBytes": {"type": "integer"}, "limitBytes": {"type": "integer"}},
            },
        },
    },
}


def spec() -> dict:
    job_ref = {"$ref": "#/components/schemas/Job"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Video Refresher API",
            "version": __version__,
            "description": "Upload MP4/MOV creatives, get N freshly encoded variations of each as a ZIP. "
            'Every error body is {"error": "<a sentence>"}; times are ISO 8601 UTC.',
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A session token from POST /api/auth, or an API token from POST /api/tokens.",
                }
            },
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/auth": {
                "post": {
                    "operationId": "login",
                    "summary": "Exchange the shared password for a session token (valid TOKEN_TTL_SECONDS)",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["password"],
                                    "properties": {"password": {"type": "string"}},
                                }
                            },
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "required": ["password"],
                                    "properties": {"password": {"type": "string"}},
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["token", "expiresAt"],
                                "properties": {"token": {"type": "string"}, "expiresAt": _TIME},
                            },
                            "a session token",
                        ),
                        "400": _err("no password, or a body that is not a JSON object"),
                        "401": _err("wrong password"),
                        "429": _err("too many failed attempts from this address"),
                    },
                },
                "delete": {
                    "operationId": "logout",
                    "summary": "Sign out: the session token (or cookie session) that sends this stops working at once",
                    "description": "With all=1, every session ends, by token or browser, this one included; API "
                    "tokens are not sessions and stay until revoked. A cookie session needs the "
                    "page's X-CSRF-Token header.",
                    "parameters": [
                        {
                            "name": "all",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["0", "1", "false", "true"]},
                            "description": "1: end every session, not only this one",
                        }
                    ],
                    "responses": {
                        "204": {"description": "signed out"},
                        "400": _err("all is neither 1 nor 0"),
                        "403": _err(
                            "called with an API token (revoke it with DELETE /api/tokens/{tokenId}), "
                            "or a cookie session without its CSRF header"
                        ),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/tokens": {
                "post": {
                    "operationId": "createToken",
                    "summary": "Create a named API token; its secret is shown only in this answer",
                    "description": "Only a session (the password holder) may create tokens: an API token gets 403.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "required": ["name"], "properties": {"name": _TOKEN_NAME}}
                            },
                            "application/x-www-form-urlencoded": {
                                "schema": {"type": "object", "required": ["name"], "properties": {"name": _TOKEN_NAME}}
                            },
                        },
                    },
                    "responses": {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["id", "name", "token", "createdAt"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "name": {"type": "string"},
                                    "token": {"type": "string"},
                                    "createdAt": _TIME,
                                },
                            },
                            "the new token",
                        ),
                        "400": _err(
                            f"the name is missing or not {contract.MIN_TOKEN_NAME_LENGTH}-"
                            f"{contract.MAX_TOKEN_NAME_LENGTH} printable characters"
                        ),
                        "403": _err("called with an API token"),
                        **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listTokens",
                    "summary": "List API tokens (never their secrets)",
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"$ref": "#/components/schemas/Token"}},
                            "the tokens, oldest first",
                        ),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/tokens/{tokenId}": {
                "delete": {
                    "operationId": "revokeToken",
                    "summary": "Revoke an API token; it stops working at once",
                    "description": "A session may revoke any token; an API token only itself (403 otherwise).",
                    "parameters": [{"name": "tokenId", "in": "path", "required": True, "schema": _ID}],
                    "responses": {
                        "204": {"description": "revoked"},
                        "403": _err("an API token tried to revoke another token"),
                        "404": _err("unknown token"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/uploads": {
                "post": {
                    "operationId": "createUpload",
                    "summary": "Begin a resumable upload (tus 1.0 creation, creation-with-upload)",
                    "description": "OPTIONS (no token) says what the server speaks: Tus-Version, "
                    "Tus-Extension, Tus-Max-Size (MAX_UPLOAD_MB).",
                    "parameters": [
                        _TUS_RESUMABLE,
                        {"name": "Upload-Length", "in": "header", "required": True, "schema": _BYTES},
                        {
                            "name": "Upload-Metadata",
                            "in": "header",
                            "schema": {"type": "string"},
                            "description": "comma-separated `key base64(value)` pairs: filename, filetype",
                        },
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "responses": {
                        "201": {
                            "description": "created (with the first bytes, when a body was sent)",
                            "headers": {
                                "Location": _header("/api/uploads/<uploadId>"),
                                "Upload-Offset": _header("bytes received", _BYTES),
                            },
                        },
                        **_UPLOAD_ERRORS,
                    },
                }
            },
            "/api/uploads/{uploadId}": {
                "patch": {
                    "operationId": "sendUploadBytes",
                    "summary": "Send bytes of a resumable upload, from its offset on (tus 1.0 core)",
                    "description": "HEAD (same path) answers Upload-Offset and Upload-Length.",
                    "parameters": [
                        _UPLOAD_ID_PARAM,
                        _TUS_RESUMABLE,
                        {"name": "Upload-Offset", "in": "header", "required": True, "schema": _BYTES},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "responses": {
                        "204": {
                            "description": "stored",
                            "headers": {"Upload-Offset": _header("bytes received", _BYTES)},
                        },
                        "404": _err("unknown upload"),
                        "409": _err("the offset is not the upload's"),
                        "410": _err("the upload expired, or made a job"),
                        "423": _err("another request is sending this upload's bytes"),
                        **_UPLOAD_ERRORS,
                    },
                },
                "delete": {
                    "operationId": "deleteUpload",
                    "summary": "End a resumable upload; its bytes are gone (tus 1.0 termination)",
                    "parameters": [_UPLOAD_ID_PARAM, _TUS_RESUMABLE],
                    "responses": {
                        "204": {"description": "deleted"},
                        "404": _err("unknown upload"),
                        "410": _err("the upload expired, or made a job"),
                        **_UPLOAD_ERRORS,
                    },
                },
            },
            "/api/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": f"Create a job from 1-{contract.MAX_FILES} MP4/MOV videos",
                    "description": "Each file must be at most MAX_UPLOAD_MB and a video ffmpeg can read. "
                    "A rejected request leaves nothing behind.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["videos"],
                                    "properties": {
                                        "videos": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": contract.MAX_FILES,
                                            "items": {"type": "string", "format": "binary"},
                                        },
                                        "variations": {
                                            "type": "integer",
                                            "minimum": contract.MIN_VARIATIONS,
                                            "maximum": contract.MAX_VARIATIONS,
                                            "default": contract.DEFAULT_VARIATIONS,
                                        },
                                        "seed": {
                                            "type": "string",
                                            "maxLength": contract.MAX_SEED_LENGTH,
                                            "description": "the same seed and inputs give the same effects",
                                        },
                                        "name": _JOB_NAME,
                                        "webhookUrl": _WEBHOOK_URL,
                                    },
                                },
                                "encoding": {
                                    "videos": {"contentType": "video/mp4, video/quicktime, application/octet-stream"}
                                },
                            },
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["uploads"],
                                    "description": "a job from resumable uploads (/api/uploads), each complete",
                                    "properties": {
                                        "uploads": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": contract.MAX_FILES,
                                            "items": _ID,
                                        },
                                        "variations": {
                                            "type": "integer",
                                            "minimum": contract.MIN_VARIATIONS,
                                            "maximum": contract.MAX_VARIATIONS,
                                            "default": contract.DEFAULT_VARIATIONS,
                                        },
                                        "seed": {"type": "string", "maxLength": contract.MAX_SEED_LENGTH},
                                        "name": _JOB_NAME,
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": _json(
                            {"$ref": "#/components/schemas/JobCreated"},
                            "queued",
                            {"Location": _header("/api/jobs/<id>")},
                        ),
                        "400": _err(
                            f"no files, more than {contract.MAX_FILES} files, variations not a whole number in "
                            f"{contract.MIN_VARIATIONS}-{contract.MAX_VARIATIONS}, a video longer than "
                            f"MAX_DURATION_SECONDS, a text field over 500 KB, a file name over "
                            f"{contract.MAX_SENT_FILE_NAME_LENGTH} characters (the message names the limit), "
                            f"{_BAD_JOB_NAME}, or a webhookUrl that is refused "
                            f"(not http/https, not a public address, or WEBHOOK_SECRET unset)"
                        ),
                        "413": _err(
                            "a file or the request is too large, or the job's videos and estimated outputs "
                            "alone exceed STORAGE_LIMIT_MB"
                        ),
                        "415": _err(
                            "a file is not a readable MP4/MOV video, or has a picture over 8K (the message names it)"
                        ),
                        "404": _err("an upload given is unknown"),
                        "409": _err("an upload given is not complete, or made a job already (the message names it)"),
                        "410": _err("an upload given has expired"),
                        "503": _err("too many unfinished jobs (MAX_QUEUED_JOBS)"),
                        "507": _err("the server's disk is full"),
                        **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": contract.MAX_LIST_LIMIT,
                                "default": contract.DEFAULT_LIST_LIMIT,
                            },
                        },
                        {"name": "status", "in": "query", "schema": _JOB_STATUS},
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}}, "jobs"),
                        "400": _err("bad limit or status"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/jobs/{jobId}": {
                "parameters": [_JOB_ID_PARAM],
                "get": {
                    "operationId": "getJob",
                    "summary": "A job's status, files and outputs",
                    "responses": {"200": _json(job_ref, "the job"), "404": _err("unknown job"), **_AUTH_ERRORS},
                },
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Delete a finished job and all its files",
                    "responses": {
                        "204": {"description": "deleted"},
                        "404": _err("unknown job"),
                        "409": _json(_STATUS_CONFLICT, "the job is queued or processing; cancel it first"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/api/jobs/{jobId}/events": {
                "get": {
                    "operationId": "followJob",
                    "summary": "Live progress as Server-Sent Events",
                    "description": "Each event's data is the job as GET /api/jobs/{jobId} returns it; the stream "
                    "ends after the job reaches a final status.",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "200": {
                            "description": "an event stream; each event as described here",
                            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                        },
                        "404": _err("unknown job"),
                        "429": _too_many("this client has 4 streams open already"),
                        "503": _too_many("this web worker has 24 streams open already"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/cancel": {
                "post": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a job; answers once no ffmpeg of it runs",
                    "description": "Finished variations are kept. If every variation had already finished, the "
                    "job ends completed and the answer says so.",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/CancelResult"}, "settled"),
                        "202": _json(
                            {"$ref": "#/components/schemas/CancelResult"},
                            "accepted, but the job had not settled in time; poll it",
                        ),
                        "404": _err("unknown job"),
                        "409": _json(_STATUS_CONFLICT, "the job had already finished"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/retry": {
                "post": {
                    "operationId": "retryJob",
                    "summary": "Queue a finished job's failed variations again, with their recorded effects",
                    "description": "Finished variations are kept; the job goes back to queued and its status and "
                    "counts follow its variations again.",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "202": _json(job_ref, "queued again", {"Location": _header("/api/jobs/<id>")}),
                        "404": _err("unknown job"),
                        "409": _json(_STATUS_CONFLICT, "the job is queued or processing, or has no failed variations"),
                        "410": _err("the job expired or its sources are gone"),
                        "503": _err("too many unfinished jobs (MAX_QUEUED_JOBS), as for an upload"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/resume": {
                "post": {
                    "operationId": "resumeJob",
                    "summary": "Make the variations a cancel left unmade, with the same seed and effects",
                    "description": "The variations made before the cancel are kept.",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "202": _json(job_ref, "queued again", {"Location": _header("/api/jobs/<id>")}),
                        "404": _err("unknown job"),
                        "409": _json(_STATUS_CONFLICT, "the job is not cancelled"),
                        "410": _err("the job expired or its sources are gone"),
                        "503": _err("too many unfinished jobs (MAX_QUEUED_JOBS), as for an upload"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/rerun": {
                "post": {
                    "operationId": "rerunJob",
                    "summary": "A new job from the same sources, with new effects; nothing is uploaded again",
                    "description": "Every field is optional: a new seed is drawn unless one is given; variations "
                    "and name default to the original job's (a blank name names the job after its "
                    "files), and so does webhookUrl (null or blank: none). The queue cap (MAX_QUEUED_JOBS) "
                    "holds as for an upload.",
                    "parameters": [_JOB_ID_PARAM],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "seed": {"type": "string", "maxLength": contract.MAX_SEED_LENGTH},
                                        "name": {"type": ["string", "null"], "maxLength": contract.MAX_JOB_NAME_LENGTH},
                                        "variations": {
                                            "type": "integer",
                                            "minimum": contract.MIN_VARIATIONS,
                                            "maximum": contract.MAX_VARIATIONS,
                                        },
                                        "webhookUrl": {**_WEBHOOK_URL, "type": ["string", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            {
                                "allOf": [
                                    job_ref,
                                    {
                                        "type": "object",
                                        "required": ["statusUrl"],
                                        "properties": {"statusUrl": {"type": "string"}},
                                    },
                                ]
                            },
                            "the new job, queued",
                            {"Location": _header("/api/jobs/<new id>")},
                        ),
                        "400": _err(
                            f"not a JSON object, an unknown field, variations not a whole number in "
                            f"{contract.MIN_VARIATIONS}-{contract.MAX_VARIATIONS}, a bad seed, {_BAD_JOB_NAME}, "
                            f"or a webhookUrl that is refused"
                        ),
                        "404": _err("unknown job"),
                        "410": _err("the job expired or its sources are gone"),
                        "415": _err("a body that is not JSON"),
                        "503": _err("too many unfinished jobs (MAX_QUEUED_JOBS)"),
                        "507": _err("no room on the server's disk for a copy of the sources"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/download": {
                "get": {
                    "operationId": "downloadJob",
                    "summary": "A ZIP (STORE) of every output, one folder per source, with manifest.json",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "200": _binary(
                            "application/zip",
                            "the ZIP",
                            {
                                "Content-Length": _header("exact size", {"type": "integer"}),
                                "Content-Disposition": _header(
                                    'attachment; filename="<the job\'s name>.zip" (with filename* when it is not '
                                    'ASCII), or filename="refresher-<id>.zip" for a job given no name'
                                ),
                            },
                        ),
                        "404": _err("unknown job, or no outputs"),
                        "409": _json(_STATUS_CONFLICT, "still queued or processing"),
                        "410": _err("expired"),
                        "429": _too_many("this client runs DOWNLOADS_PER_CLIENT downloads already"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/outputs/{outputId}": {
                "get": {
                    "operationId": "getOutput",
                    "summary": "One output MP4 (supports Range requests)",
                    "parameters": [
                        _JOB_ID_PARAM,
                        {"name": "outputId", "in": "path", "required": True, "schema": _ID},
                        {
                            "name": "download",
                            "in": "query",
                            "required": False,
                            "description": "1 or true: send it as an attachment",
                            "schema": {"type": "string", "enum": ["1", "true"]},
                        },
                        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _binary("video/mp4", "the video", {"Accept-Ranges": _header("bytes", required=False)}),
                        "206": _binary(
                            "video/mp4", "part of the video", {"Content-Range": _header("bytes <first>-<last>/<size>")}
                        ),
                        "302": _REDIRECT,
                        "404": _err("unknown job or output"),
                        "416": _err("range not satisfiable"),
                        "429": _too_many("this client runs DOWNLOADS_PER_CLIENT downloads already"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/jobs/{jobId}/thumbnail": {
                "get": {
                    "operationId": "getThumbnail",
                    "summary": "A still from the first source, about 320 px wide",
                    "parameters": [_JOB_ID_PARAM],
                    "responses": {
                        "200": _binary("image/webp", "the image"),
                        "302": _REDIRECT,
                        "404": _err("unknown job or no thumbnail"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/api/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Service health",
                    "security": [{}, {"bearer": []}],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Health"}, "healthy"),
                        "503": _json(
                            {"$ref": "#/components/schemas/Health"},
                            "degraded: ffmpeg, the database, the data directory or the file "
                            "storage unusable, or this process's own supervisor down",
                        ),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI description")},
                }
            },
        },
    }
