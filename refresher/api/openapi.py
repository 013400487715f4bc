"""The OpenAPI 3 description of the HTTP API (API.md in machine-readable form)."""
from __future__ import annotations

from .. import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict:
    return _json(_ERROR, description)


_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_JOB_STATUS = {"type": "string", "enum": ["queued", "processing", "completed", "failed", "cancelled"]}
_JOB_ID_PARAM = {"name": "jobId", "in": "path", "required": True, "schema": _ID}
_AUTH_ERRORS = {"401": _err("missing or invalid bearer token")}

_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}},
        "additionalProperties": True,
    },
    "Output": {
        "type": "object",
        "required": ["id", "variationIndex", "name", "size", "url", "effects"],
        "properties": {
            "id": {"type": "string"}, "variationIndex": {"type": "integer", "minimum": 1},
            "name": {"type": "string"}, "size": {"type": ["integer", "null"]},
            "url": {"type": "string"}, "effects": {"type": "object"},
        },
    },
    "JobFile": {
        "type": "object",
        "required": ["id", "name", "size", "status", "progress", "completedVariations", "error", "outputs"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "size": {"type": "integer"},
            "durationSeconds": {"type": ["number", "null"]},
            "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
            "hasAudio": {"type": ["boolean", "null"]},
            "status": _JOB_STATUS, "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "completedVariations": {"type": "integer"}, "totalVariations": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Output"}},
        },
    },
    "Job": {
        "type": "object",
        "required": ["jobId", "status", "overallProgress", "totalVideos", "totalVariations",
                     "completedVariations", "seed", "files", "createdAt", "expiresAt", "error"],
        "properties": {
            "jobId": {"type": "string"}, "status": _JOB_STATUS,
            "overallProgress": {"type": "integer", "minimum": 0, "maximum": 100},
            "totalVideos": {"type": "integer"}, "totalVariations": {"type": "integer"},
            "completedVariations": {"type": "integer"}, "variationsPerVideo": {"type": "integer"},
            "seed": {"type": "string"},
            "thumbnailUrl": {"type": ["string", "null"]}, "downloadUrl": {"type": ["string", "null"]},
            "files": {"type": "array", "items": {"$ref": "#/components/schemas/JobFile"}},
            "createdAt": _TIME, "startedAt": _NULLABLE_TIME, "finishedAt": _NULLABLE_TIME,
            "cancelledAt": _NULLABLE_TIME, "expiresAt": _TIME, "error": {"type": ["string", "null"]},
        },
    },
    "JobSummary": {
        "type": "object",
        "required": ["id", "status", "totalVideos", "totalVariations", "completedVariations",
                     "overallProgress", "fileNames", "thumbnailUrl", "createdAt", "expiresAt"],
        "properties": {
            "id": {"type": "string"}, "status": _JOB_STATUS,
            "totalVideos": {"type": "integer"}, "totalVariations": {"type": "integer"},
            "completedVariations": {"type": "integer"},
            "overallProgress": {"type": "integer", "minimum": 0, "maximum": 100},
            "fileNames": {"type": "array", "items": {"type": "string"}},
            "thumbnailUrl": {"type": ["string", "null"]}, "createdAt": _TIME,
            "finishedAt": _NULLABLE_TIME, "cancelledAt": _NULLABLE_TIME, "expiresAt": _TIME,
            "error": {"type": ["string", "null"]},
        },
    },
    "JobCreated": {
        "type": "object",
        "required": ["jobId", "status", "variationsPerVideo", "totalVariations", "files", "statusUrl"],
        "properties": {
            "jobId": {"type": "string"}, "status": {"const": "queued"},
            "variationsPerVideo": {"type": "integer"}, "totalVariations": {"type": "integer"},
            "seed": {"type": "string"},
            "files": {"type": "array", "items": {
                "type": "object", "required": ["id", "name", "size"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "size": {"type": "integer"}},
            }},
            "statusUrl": {"type": "string"},
        },
    },
    "CancelResult": {
        "type": "object",
        "required": ["jobId", "status", "completedVariations", "totalVariations", "cancelledAt"],
        "properties": {
            "jobId": {"type": "string"}, "status": _JOB_STATUS,
            "completedVariations": {"type": "integer"}, "totalVariations": {"type": "integer"},
            "cancelledAt": _NULLABLE_TIME,
        },
    },
    "Token": {
        "type": "object", "required": ["id", "name", "createdAt", "lastUsedAt"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                       "createdAt": _TIME, "lastUsedAt": _NULLABLE_TIME},
    },
    "Health": {
        "type": "object", "required": ["status", "version", "ffmpeg", "queue", "disk"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": {"type": "string"}, "ffmpeg": {"type": ["string", "null"]},
            "supervisor": {"type": "string"}, "reason": {"type": "string"},
            "queue": {"type": "object", "required": ["queued", "processing"],
                      "properties": {"queued": {"type": "integer"}, "processing": {"type": "integer"}}},
            "disk": {"type": "object", "required": ["usedBytes", "limitBytes"],
                     "properties": {"usedBytes": {"type": "integer"}, "limitBytes": {"type": "integer"}}},
        },
    },
}


def spec() -> dict:
    secured = [{"bearer": []}]
    job_ref = {"$ref": "#/components/schemas/Job"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Video Refresher API", "version": __version__,
                 "description": "Upload MP4/MOV creatives, get N freshly encoded variations of each as a ZIP."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": secured,
        "paths": {
            "/api/auth": {"post": {
                "summary": "Exchange the shared password for a session token",
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["password"],
                                                    "properties": {"password": {"type": "string"}}}},
                    "application/x-www-form-urlencoded": {"schema": {
                        "type": "object", "required": ["password"],
                        "properties": {"password": {"type": "string"}}}},
                }},
                "responses": {
                    "200": _json({"type": "object", "required": ["token", "expiresAt"],
                                  "properties": {"token": {"type": "string"}, "expiresAt": _TIME}},
                                 "a session token"),
                    "400": _err("no password"), "401": _err("wrong password"),
                    "429": _err("too many failed attempts from this address"),
                },
            }},
            "/api/tokens": {
                "post": {
                    "summary": "Create a named API token (shown once)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}}}}}},
                    "responses": {
                        "201": _json({"type": "object", "required": ["id", "name", "token", "createdAt"],
                                      "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                                     "token": {"type": "string"}, "createdAt": _TIME}},
                                     "the new token; its secret is never shown again"),
                        "400": _err("bad name"), "403": _err("called with an API token"), **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "summary": "List API tokens (never their secrets)",
                    "responses": {"200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Token"}},
                                               "the tokens"), **_AUTH_ERRORS},
                },
            },
            "/api/tokens/{tokenId}": {"delete": {
                "summary": "Revoke an API token",
                "parameters": [{"name": "tokenId", "in": "path", "required": True, "schema": _ID}],
                "responses": {"204": {"description": "revoked"}, "404": _err("unknown token"), **_AUTH_ERRORS},
            }},
            "/api/jobs": {
                "post": {
                    "summary": "Create a job from 1–10 videos",
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["videos"],
                        "properties": {
                            "videos": {"type": "array", "minItems": 1, "maxItems": 10,
                                       "items": {"type": "string", "contentMediaType": "video/mp4"}},
                            "variations": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
                            "seed": {"type": "string", "maxLength": 128},
                        }}}}},
                    "responses": {
                        "202": {**_json({"$ref": "#/components/schemas/JobCreated"}, "queued"),
                                "headers": {"Location": {"schema": {"type": "string"}}}},
                        "400": _err("no files, too many files, or bad variations"),
                        "413": _err("a file or the request is too large"),
                        "415": _err("a file is not a readable MP4/MOV video"),
                        "503": _err("the queue is full"), **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                    "maximum": 200, "default": 50}},
                        {"name": "status", "in": "query", "schema": _JOB_STATUS},
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/JobSummary"}},
                                     "jobs"),
                        "400": _err("bad limit or status"), **_AUTH_ERRORS,
                    },
                },
            },
            "/api/jobs/{jobId}": {
                "parameters": [_JOB_ID_PARAM],
                "get": {"summary": "A job's status, files and outputs",
                        "responses": {"200": _json(job_ref, "the job"), "404": _err("unknown job"),
                                      **_AUTH_ERRORS}},
                "delete": {"summary": "Delete a finished job and its files",
                           "responses": {"204": {"description": "deleted"}, "404": _err("unknown job"),
                                         "409": _err("the job is queued or processing"), **_AUTH_ERRORS}},
            },
            "/api/jobs/{jobId}/events": {"get": {
                "summary": "Live progress as Server-Sent Events (data: the job JSON)",
                "parameters": [_JOB_ID_PARAM],
                "responses": {"200": {"description": "an event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              "404": _err("unknown job"), **_AUTH_ERRORS},
            }},
            "/api/jobs/{jobId}/cancel": {"post": {
                "summary": "Cancel a job; answers once no ffmpeg of it runs",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/CancelResult"}, "settled"),
                    "404": _err("unknown job"),
                    "409": _json({"allOf": [_ERROR, {"type": "object", "required": ["status"],
                                                     "properties": {"status": _JOB_STATUS}}]},
                                 "the job had already finished"),
                    **_AUTH_ERRORS,
                },
            }},
            "/api/jobs/{jobId}/download": {"get": {
                "summary": "A ZIP (STORE) of every output, with manifest.json",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": {"description": "the ZIP", "headers": {"Content-Length": {"schema": {"type": "integer"}}},
                            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
                    "404": _err("unknown job or no outputs"), "409": _err("still queued or processing"),
                    "410": _err("expired"), **_AUTH_ERRORS,
                },
            }},
            "/api/jobs/{jobId}/outputs/{outputId}": {"get": {
                "summary": "One output MP4 (supports Range)",
                "parameters": [_JOB_ID_PARAM, {"name": "outputId", "in": "path", "required": True, "schema": _ID},
                               {"name": "Range", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the video",
                            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                    "206": {"description": "part of the video",
                            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                    "404": _err("unknown job or output"), "416": {"description": "range not satisfiable"},
                    **_AUTH_ERRORS,
                },
            }},
            "/api/jobs/{jobId}/thumbnail": {"get": {
                "summary": "A still from the first source, about 320 px wide",
                "parameters": [_JOB_ID_PARAM],
                "responses": {
                    "200": {"description": "the image",
                            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}}},
                    "404": _err("unknown job or no thumbnail"), **_AUTH_ERRORS,
                },
            }},
            "/api/health": {"get": {
                "summary": "Service health", "security": [],
                "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "healthy"),
                              "503": _json({"$ref": "#/components/schemas/Health"}, "degraded")},
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI description")},
            }},
        },
    }
