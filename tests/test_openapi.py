"""The OpenAPI description (GET /api/openapi.json) held to the implementation.

schemathesis generates requests for every operation, valid and invalid, and
checks that the app never answers 5xx and that status codes, content types,
headers and bodies are the ones the description declares. Random ids only
reach the 404 paths, so real jobs (upload, encode, cancel, download, delete)
and real tokens are checked against the description as well.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate as validate_openapi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from refresher import auth
from tests.conftest import PASSWORD


@schemathesis.serializer("application/offset+octet-stream")
def _offset_octets(ctx, value) -> bytes:
    """The bytes of a resumable upload's PATCH, as generated."""
    return value if isinstance(value, bytes) else str(value).encode()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Valid and invalid inputs, a bounded number per operation: the whole run takes seconds.
CONFIG = schemathesis.Config.from_dict({"generation": {"mode": "all", "max-examples": 25}})


def load_schema(service):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", service.app, config=CONFIG)


@pytest.fixture
def api_schema(service):
    return load_schema(service)


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_described(case, service):
    if (case.method.upper(), case.path) != ("DELETE", "/api/auth"):
        case.call_and_validate(headers=service.headers, checks=CHECKS)
        return
    # Each sign-out ends a session of its own; ?all=1 ends the service's too, so it gets a new one.
    case.call_and_validate(headers={"Authorization": f"Bearer {_new_session_token(service)}"}, checks=CHECKS)
    service.headers = {"Authorization": f"Bearer {_new_session_token(service)}"}


def _new_session_token(service) -> str:
    """Made directly: the fuzzed sign-ins have used up this address's budget of failures."""
    with service.app.app_context():
        return auth.issue_session_token()[0]


def test_the_description_is_valid_openapi(service):
    validate_openapi(service.get("/api/openapi.json").get_json())


def _normalized(path: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_api_route_is_described_and_nothing_else(service):
    described = {
        (_normalized(path), method.upper())
        for path, item in service.get("/api/openapi.json").get_json()["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = {
        (_normalized(rule.rule), method)
        for rule in service.app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == described


class Conformance:
    """Checks responses from real requests against the operation they answer."""

    def __init__(self, service):
        self.service = service
        self.schema = load_schema(service)

    def check(self, method: str, path: str, response, expect: int):
        assert response.status_code == expect, (method, path, response.status_code, response.get_data()[:300])
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
        sent = re.match(pattern, response.request.path)
        case = self.schema[path][method].Case(path_parameters=sent.groupdict())
        case.validate_response(response, checks=CHECKS)
        return response


def test_a_real_job_answers_as_described(service, media):
    c = Conformance(service)
    upload = {"videos": [(open(media["clip"], "rb"), "clip.mp4")], "variations": "2", "seed": "s1"}
    created = c.check(
        "POST", "/api/jobs", service.post("/api/jobs", data=upload, content_type="multipart/form-data"), 202
    ).get_json()
    job_id = created["jobId"]
    c.check("GET", "/api/jobs/{jobId}", service.get(f"/api/jobs/{job_id}"), 200)

    job = service.wait(job_id, ("completed",))
    c.check("GET", "/api/jobs/{jobId}", service.get(f"/api/jobs/{job_id}"), 200)
    c.check("GET", "/api/jobs", service.get("/api/jobs"), 200)
    c.check("GET", "/api/jobs", service.get("/api/jobs?status=completed&limit=1"), 200)
    c.check("GET", "/api/jobs/{jobId}/events", service.get(f"/api/jobs/{job_id}/events"), 200)
    c.check("GET", "/api/jobs/{jobId}/download", service.get(f"/api/jobs/{job_id}/download"), 200)
    c.check("GET", "/api/jobs/{jobId}/thumbnail", service.get(f"/api/jobs/{job_id}/thumbnail"), 200)
    output = f"/api/jobs/{job_id}/outputs/{job['files'][0]['outputs'][0]['id']}"
    c.check("GET", "/api/jobs/{jobId}/outputs/{outputId}", service.get(output), 200)
    c.check("GET", "/api/jobs/{jobId}/outputs/{outputId}", service.get(output + "?download=1"), 200)
    c.check("GET", "/api/jobs/{jobId}/outputs/{outputId}", service.get(output, headers={"Range": "bytes=0-99"}), 206)
    c.check(
        "GET", "/api/jobs/{jobId}/outputs/{outputId}", service.get(output, headers={"Range": "bytes=999999999-"}), 416
    )
    c.check("POST", "/api/jobs/{jobId}/cancel", service.post(f"/api/jobs/{job_id}/cancel"), 409)
    c.check("POST", "/api/jobs/{jobId}/retry", service.post(f"/api/jobs/{job_id}/retry"), 409)
    c.check("POST", "/api/jobs/{jobId}/resume", service.post(f"/api/jobs/{job_id}/resume"), 409)
    again = c.check(
        "POST",
        "/api/jobs/{jobId}/rerun",
        service.post(f"/api/jobs/{job_id}/rerun", json={"name": "Again", "variations": 1}),
        202,
    )
    c.check("POST", "/api/jobs/{jobId}/rerun", service.post(f"/api/jobs/{job_id}/rerun", json={"variations": 0}), 400)
    service.wait(again.get_json()["jobId"])
    c.check("DELETE", "/api/jobs/{jobId}", service.delete(f"/api/jobs/{job_id}"), 204)
    c.check("GET", "/api/jobs/{jobId}", service.get(f"/api/jobs/{job_id}"), 404)
    c.check("GET", "/api/jobs/{jobId}/download", service.get(f"/api/jobs/{job_id}/download"), 404)

    not_video = {"videos": [(open(media["not_video"], "rb"), "notes.mp4")]}
    c.check("POST", "/api/jobs", service.post("/api/jobs", data=not_video, content_type="multipart/form-data"), 415)


def test_a_running_job_answers_as_described(service, media):
    c = Conformance(service)
    upload = {"videos": [(open(media["long"], "rb"), "long.mp4")], "variations": "8"}
    job_id = service.post("/api/jobs", data=upload, content_type="multipart/form-data").get_json()["jobId"]
    service.wait(job_id, ("processing",))
    c.check("GET", "/api/jobs/{jobId}/download", service.get(f"/api/jobs/{job_id}/download"), 409)
    c.check("DELETE", "/api/jobs/{jobId}", service.delete(f"/api/jobs/{job_id}"), 409)
    c.check("POST", "/api/jobs/{jobId}/retry", service.post(f"/api/jobs/{job_id}/retry"), 409)
    c.check("POST", "/api/jobs/{jobId}/cancel", service.post(f"/api/jobs/{job_id}/cancel"), 200)
    c.check("GET", "/api/jobs/{jobId}", service.get(f"/api/jobs/{job_id}"), 200)
    c.check("POST", "/api/jobs/{jobId}/resume", service.post(f"/api/jobs/{job_id}/resume"), 202)
    service.post(f"/api/jobs/{job_id}/cancel")


def test_auth_and_tokens_answer_as_described(service):
    c = Conformance(service)
    c.check("POST", "/api/auth", service.client.post("/api/auth", json={"password": PASSWORD}), 200)
    c.check("POST", "/api/auth", service.client.post("/api/auth", data={"password": "wrong"}), 401)
    c.check("POST", "/api/auth", service.client.post("/api/auth", json={}), 400)
    created = c.check("POST", "/api/tokens", service.post("/api/tokens", json={"name": "ci"}), 201).get_json()
    c.check("POST", "/api/tokens", service.post("/api/tokens", data={"name": "from a form"}), 201)
    c.check("POST", "/api/tokens", service.post("/api/tokens", json={"name": ""}), 400)
    c.check("GET", "/api/tokens", service.get("/api/tokens"), 200)
    as_api_token = {"Authorization": f"Bearer {created['token']}"}
    c.check("POST", "/api/tokens", service.post("/api/tokens", json={"name": "x"}, headers=as_api_token), 403)
    c.check("DELETE", "/api/tokens/{tokenId}", service.delete(f"/api/tokens/{created['id']}"), 204)
    c.check("DELETE", "/api/tokens/{tokenId}", service.delete(f"/api/tokens/{created['id']}"), 404)
    c.check("GET", "/api/tokens", service.get("/api/tokens", headers=as_api_token), 401)

    mine = c.check("POST", "/api/tokens", service.post("/api/tokens", json={"name": "mine"}), 201).get_json()
    as_mine = {"Authorization": f"Bearer {mine['token']}"}
    other = service.post("/api/tokens", json={"name": "other"}).get_json()
    c.check("DELETE", "/api/tokens/{tokenId}", service.delete(f"/api/tokens/{other['id']}", headers=as_mine), 403)
    c.check("DELETE", "/api/tokens/{tokenId}", service.delete(f"/api/tokens/{mine['id']}", headers=as_mine), 204)

    signed_in = {"Authorization": f"Bearer {_new_session_token(service)}"}
    c.check("DELETE", "/api/auth", service.client.delete("/api/auth?all=2", headers=signed_in), 400)
    c.check("DELETE", "/api/auth", service.client.delete("/api/auth", headers=signed_in), 204)
    c.check("DELETE", "/api/auth", service.client.delete("/api/auth", headers=signed_in), 401)
    as_other = {"Authorization": f"Bearer {other['token']}"}
    c.check("DELETE", "/api/auth", service.client.delete("/api/auth", headers=as_other), 403)
    c.check("GET", "/api/health", service.client.get("/api/health"), 200)
    c.check("GET", "/api/openapi.json", service.client.get("/api/openapi.json"), 200)
