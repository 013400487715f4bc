"""Webhooks: which destinations may be called (tested without sending
anything: the resolver is a stand-in), the signature, one attempt against a
receiver on 127.0.0.1, the deliveries in the store on both engines, and a
real supervisor delivering, retrying and surviving a restart."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from jsonschema import Draft202012Validator, ValidationError

from refresher import webhooks
from refresher.api import openapi
from refresher.engine.handle import SupervisorHandle
from refresher.errors import Rejected
from refresher.store import Store, new_id
from refresher.webhooks.address import Refused, parse_ipv4, parse_url, vet, why_not_public
from refresher.webhooks.delivery import post, signed_headers
from refresher.webapp import create_app

from .conftest import PASSWORD, EmbeddedService, job_of, make_settings, sql
from .support.servers import wait_until
from .support.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def no_resolver(host: str, port: int):
    raise AssertionError(f"{host} was resolved; an address needs no resolver")


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise Refused(f"its host {host} could not be resolved")
        return table[host]

    return resolve


def verdict(url: str, allow_private: bool = False, resolve=no_resolver) -> str | None:
    """None when the URL may be called; else why not."""
    try:
        vet(parse_url(url), allow_private, resolve)
    except Refused as exc:
        return str(exc)
    return None


# --- where a webhook may go -------------------------------------------------------------------

REFUSED_ADDRESSES = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7F.1/", "loopback"),
    ("https://127.0.0.1.:8443/x", "loopback"),
    ("http://[::1]:8080/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 around 127.0.0.1
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.3.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "private"),
    ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 around 10.0.0.1
    ("http://[fd00::1]/", "unique-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[2001:db8::1]/", "reserved"),
]


@pytest.mark.parametrize("url, kind", REFUSED_ADDRESSES)
def test_addresses_that_are_not_public_are_refused_in_every_spelling(url, kind):
    reason = verdict(url)
    assert reason is not None and kind in reason and "WEBHOOK_ALLOW_PRIVATE" in reason, reason
    assert verdict(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/", "http://134744072/hook", "https://[2606:4700::1111]/x?y=1", "http://0x08.8.8.8:8080/"]
)
def test_public_addresses_are_called_without_a_lookup(url):
    assert verdict(url) is None


def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public():
    table = {
        "hooks.example.com": ["93.184.216.34", "2606:2800:220:1::248"],
        "mixed.example.com": ["93.184.216.34", "10.1.2.3"],
        "inside.example.com": ["fd12::1"],
        "localhost": ["127.0.0.1", "::1"],
    }
    assert verdict("https://hooks.example.com/in", resolve=resolver(table)) is None
    assert "10.1.2.3, a private address" in verdict("https://mixed.example.com/", resolve=resolver(table))
    assert "unique-local" in verdict("https://inside.example.com/", resolve=resolver(table))
    assert "loopback" in verdict("http://LocalHost:8000/", resolve=resolver(table))
    assert "could not be resolved" in verdict("http://nowhere.example.com/", resolve=resolver(table))
    assert verdict("http://localhost:8000/", allow_private=True, resolve=resolver(table)) is None


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("//example.com/hook", "http:// or https://"),
        ("http://user:secret@8.8.8.8/", "user name or password"),
        ("http://exa mple.com/", "spaces"),
        ("http:///path", "no host"),
        ("http://[::1/", "not a valid URL"),
        ("http://[not-v6]/", "not a valid"),
        ("http://1.2.3.4.5/", "not a valid IPv4"),
        ("http://08.0.0.1/", "not a valid IPv4"),
        ("http://256.0.0.1/", "not a valid IPv4"),
        ("http://1.2.65536/", "not a valid IPv4"),
        ("http://8.8.8.8:99999/", "not a valid URL"),
        ("http://a..b/", "not a valid host name"),
        ("http://" + "a" * 2100 + ".com/", "longer than"),
    ],
)
def test_urls_of_the_wrong_form_are_refused(url, problem):
    reason = verdict(url)
    assert reason is not None and problem in reason, reason


def _spell(value: int, parts: int, bases: list[str]) -> str:
    """`value` written as inet_aton reads it: parts - 1 bytes, then the rest."""
    numbers = [(value >> (8 * (3 - i))) & 0xFF for i in range(parts - 1)]
    numbers.append(value & ((1 << (8 * (5 - parts))) - 1))
    written = []
    for number, base in zip(numbers, bases, strict=False):
        written.append({"dec": str(number), "oct": "0" + format(number, "o"), "hex": hex(number)}[base])
    return ".".join(written)


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.integers(0, 2**32 - 1),
        st.sampled_from([0x7F000001, 0xA9FEA9FE, 0x0A000001, 0xC0A80001, 0xE0000001, 0]),
    ),
    parts=st.integers(1, 4),
    bases=st.lists(st.sampled_from(["dec", "oct", "hex"]), min_size=4, max_size=4),
)
def test_every_spelling_of_an_address_is_read_as_the_resolver_reads_it(value, parts, bases):
    spelled = _spell(value, parts, bases)
    assert parse_ipv4(spelled) == ipaddress.IPv4Address(value)
    assert socket.inet_aton(spelled) == value.to_bytes(4, "big")  # the C library, not a lookup
    public = why_not_public(ipaddress.IPv4Address(value)) is None
    assert (verdict(f"http://{spelled}/hook") is None) == public
    assert (verdict(f"http://[::ffff:{ipaddress.IPv4Address(value)}]/") is None) == public


def test_the_url_is_checked_when_a_job_is_created(tmp_path):
    quiet = make_settings(tmp_path)
    with pytest.raises(Rejected, match="WEBHOOK_SECRET"):
        webhooks.accept_url("https://8.8.8.8/", quiet)
    assert webhooks.accept_url("", quiet) is None and webhooks.accept_url(None, quiet) is None
    keyed = make_settings(tmp_path, webhook_secret=SECRET)
    table = resolver({"hooks.example.com": ["93.184.216.34"], "rebind.example.com": ["192.168.0.7"]})
    assert webhooks.accept_url(" https://hooks.example.com/in ", keyed, table) == "https://hooks.example.com/in"
    with pytest.raises(Rejected, match="192.168.0.7, a private address") as refused:
        webhooks.accept_url("https://rebind.example.com/in", keyed, table)
    assert refused.value.code == 400 and refused.value.message.startswith("webhookUrl ")


# --- one attempt --------------------------------------------------------------------------------


def test_the_signature_verifies_with_the_standard_webhooks_library():
    body = json.dumps({"type": "job.completed", "data": {"jobId": "x"}}).encode()
    headers = signed_headers(SECRET, "msg_abc", body, time.time())
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.completed", "data": {"jobId": "x"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"completed", b"cancelled"), headers)
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_an_attempt_connects_to_the_address_it_checked_and_follows_no_redirect(receiver):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a name that resolves elsewhere the second time

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    url = f"http://hooks.example.com:{receiver.port}/pinned"
    assert verdict(url, resolve=rebinding) is None  # at creation
    error = post(url, b"{}", {}, allow_private=False, resolve=rebinding)  # at delivery
    assert error is not None and error.startswith("not sent") and "loopback" in error, error
    assert receiver.to("/pinned") == []

    # allowed: the connection goes to the address; the name is only the Host header
    assert post(url, b"{}", {"webhook-id": "msg_1"}, allow_private=True, resolve=resolver({})) is not None
    assert post(url, b"{}", {}, allow_private=True, resolve=resolver({"hooks.example.com": ["127.0.0.1"]})) is None
    [got] = receiver.to("/pinned")
    assert got.headers["host"] == f"hooks.example.com:{receiver.port}"

    receiver.answers["/moved"] = [302]
    receiver.extra_headers["/moved"] = {"Location": receiver.url("/elsewhere")}
    assert post(receiver.url("/moved"), b"{}", {}, allow_private=True) == "answered 302 Found"
    assert receiver.to("/elsewhere") == []

    receiver.delays["/slow"] = 1.0
    assert post(receiver.url("/slow"), b"{}", {}, allow_private=True, timeout=0.3) == "no answer within 0.3 s"


# --- deliveries in the store --------------------------------------------------------------------


def _ended_job(store: Store, webhook_url: str | None = "https://hooks.example.com/in", fail: bool = False) -> str:
    now = time.time()
    job_id, file_id = new_id(), new_id()
    store.create_job(
        {
            "id": job_id,
            "variations_per_video": 1,
            "seed": "s",
            "created_at": now,
            "expires_at": now + 60,
            "webhook_url": webhook_url,
        },
        [{"id": file_id, "position": 0, "name": "a.mp4", "size": 1, "upload_path": "u", "duration": 1.0}],
        [{"id": new_id(), "file_id": file_id, "variation_index": 1, "effects": {}, "name": "x", "output_path": "x"}],
    )
    if fail:
        store.fail_queued_job(job_id, "no room for it", now, 60)  # as the cleanup daemon fails a stale job
    else:
        store.request_cancel(job_id, now, 60)  # nothing runs: it ends at once
    return job_id


def test_of_many_claimers_exactly_one_makes_each_attempt_on_both_engines(database):
    store = Store(database)
    store.migrate()
    assert store.webhook_deliveries(_ended_job(store, None)) == []
    job_id = _ended_job(store)
    [delivery] = store.webhook_deliveries(job_id)
    assert (delivery["event"], delivery["attempts"], delivery["delivered_at"]) == ("job.cancelled", 0, None)

    def claims() -> int:
        start = threading.Barrier(6)
        got: list[dict] = []

        def claim():
            start.wait()
            got.extend(store.claim_webhooks(time.time(), 60, 3))

        threads = [threading.Thread(target=claim) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(got)

    assert claims() == 1
    assert claims() == 0  # claimed: not due again while the claim lasts
    assert store.record_webhook_attempt(delivery["id"], 1, time.time(), "answered 500", time.time() - 1)
    assert store.get_job(job_id)["webhook_error"] == "answered 500"
    assert claims() == 1  # due again: the retry
    assert store.record_webhook_attempt(delivery["id"], 2, time.time(), None, None)
    job = store.get_job(job_id)
    assert (job["webhook_attempts"], job["webhook_delivered_at"] is not None) == (2, True)
    assert claims() == 0

    # a host that dies during the last allowed attempt: once its claim runs out, the delivery is given up
    job_id = _ended_job(store)
    [delivery] = store.webhook_deliveries(job_id)
    assert len(store.claim_webhooks(time.time(), 0.01, 1)) == 1
    time.sleep(0.02)
    assert store.claim_webhooks(time.time(), 60, 1) == []
    job = store.get_job(job_id)
    assert (job["webhook_attempts"], job["webhook_delivered_at"]) == (1, None)
    assert job["webhook_error"] == "an attempt was interrupted; gave up after 1 attempt"
    assert store.webhook_deliveries(job_id)[0]["next_attempt_at"] is None
    store.close()


def test_a_failed_job_is_announced_and_a_removed_job_takes_its_deliveries_along(database):
    store = Store(database)
    store.migrate()
    job_id = _ended_job(store, fail=True)
    assert [d["event"] for d in store.webhook_deliveries(job_id)] == ["job.failed"]
    assert store.delete_job(job_id)  # as expiry and eviction delete it
    assert sql(store, "SELECT COUNT(*) FROM webhook_deliveries") == [(0,)]
    assert store.claim_webhooks(time.time(), 60, 3) == []
    store.close()


# --- through the API, with a real supervisor ----------------------------------------------------


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, receiver):
    """One service for the module: webhooks signed, retried after 0.2 s and 0.5 s, loopback allowed."""
    settings = make_settings(
        tmp_path_factory.mktemp("hooked") / "data",
        webhook_secret=SECRET,
        webhook_retry_seconds=(0.2, 0.5),
        webhook_allow_private=True,
    )
    svc = EmbeddedService(settings)
    yield svc
    svc.close()


def _submit(svc, path: Path, variations: int, webhook_url: str, expect: int = 202) -> dict:
    data = {"videos": [(open(path, "rb"), path.name)], "variations": str(variations), "webhookUrl": webhook_url}
    r = svc.post("/api/jobs", data=data, content_type="multipart/form-data")
    assert r.status_code == expect, r.get_json()
    return r.get_json()


def _verified(got) -> dict:
    return Webhook(SECRET).verify(got.body, got.headers)


def test_a_completed_job_is_announced_once_signed(hooked, receiver, media):
    job_id = _submit(hooked, media["clip"], 2, receiver.url("/done"))["jobId"]
    job = hooked.wait(job_id)
    [got] = wait_until(lambda: receiver.to("/done"), timeout=30)
    payload = _verified(got)
    assert payload["type"] == "job.completed" and payload["timestamp"].endswith("Z")
    assert payload["data"]["jobId"] == job_id and payload["data"]["status"] == "completed"
    assert payload["data"]["completedVariations"] == 2 and payload["data"]["files"] == job["files"]
    assert got.headers["webhook-id"].startswith("msg_") and got.headers["content-type"] == "application/json"
    shown = wait_until(lambda: hooked.get(f"/api/jobs/{job_id}").get_json()["webhook"]["deliveredAt"] and
                       hooked.get(f"/api/jobs/{job_id}").get_json()["webhook"])  # fmt: skip
    assert shown["url"] == receiver.url("/done") and shown["attempts"] == 1 and shown["lastError"] is None
    # as the OpenAPI document describes it
    schema = {"$ref": "#/components/schemas/Job", "components": openapi.spec()["components"]}
    Draft202012Validator(schema).validate(hooked.get(f"/api/jobs/{job_id}").get_json())
    with pytest.raises(ValidationError):
        Draft202012Validator(schema).validate({**job, "webhook": {**shown, "attempts": "1"}})
    time.sleep(1.2)  # the sender looks every second: nothing more comes
    assert len(receiver.to("/done")) == 1


def test_a_failed_attempt_is_retried_with_the_same_id_and_body(hooked, receiver, media):
    receiver.answers["/flaky"] = [500]
    job_id = _submit(hooked, media["clip"], 1, receiver.url("/flaky"))["jobId"]
    first, second = wait_until(lambda: len(receiver.to("/flaky")) >= 2 and receiver.to("/flaky"), timeout=30)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert second.at - first.at >= 0.2  # the first delay of WEBHOOK_RETRY_SECONDS
    _verified(second)
    shown = wait_until(lambda: hooked.get(f"/api/jobs/{job_id}").get_json()["webhook"]["deliveredAt"] and
                       hooked.get(f"/api/jobs/{job_id}").get_json()["webhook"])  # fmt: skip
    assert shown["attempts"] == 2 and shown["lastError"] == "answered 500 Internal Server Error"


def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_last_retry(hooked, receiver, media):
    receiver.answers["/down"] = [503, 503, 503, 503]
    job_id = _submit(hooked, media["clip"], 1, receiver.url("/down"))["jobId"]
    shown = wait_until(
        lambda: (
            (w := hooked.get(f"/api/jobs/{job_id}").get_json()["webhook"])["lastError"]
            and "gave up" in w["lastError"]
            and w
        ),
        timeout=30,
    )
    assert shown["attempts"] == 3 and shown["deliveredAt"] is None
    assert "503" in shown["lastError"] and len(receiver.to("/down")) == 3


def test_a_rerun_keeps_the_webhook_or_takes_another(hooked, receiver, media):
    job_id = _submit(hooked, media["clip"], 1, receiver.url("/first"))["jobId"]
    hooked.wait(job_id)

    def rerun(body):
        r = hooked.post(f"/api/jobs/{job_id}/rerun", json=body)
        assert r.status_code == 202, r.get_json()
        return r.get_json()

    assert rerun({"variations": 1})["webhook"]["url"] == receiver.url("/first")
    assert rerun({"variations": 1, "webhookUrl": None})["webhook"] is None
    other = rerun({"variations": 1, "webhookUrl": receiver.url("/other")})
    assert other["webhook"] == {"url": receiver.url("/other"), "deliveredAt": None, "attempts": 0, "lastError": None}
    [got] = wait_until(lambda: receiver.to("/other"), timeout=30)
    assert _verified(got)["data"]["jobId"] == other["jobId"]
    r = hooked.post(f"/api/jobs/{job_id}/rerun", json={"webhookUrl": "http://[::1/"})
    assert r.status_code == 400 and r.get_json()["error"].startswith("webhookUrl")


def test_a_cancel_is_announced_as_job_cancelled(hooked, receiver, media):
    job_id = _submit(hooked, media["clip"], 20, receiver.url("/cancelled"))["jobId"]
    hooked.post(f"/api/jobs/{job_id}/cancel")
    [got] = wait_until(lambda: receiver.to("/cancelled"), timeout=30)
    payload = _verified(got)
    assert payload["type"] == "job.cancelled" and payload["data"]["status"] == "cancelled"
    assert payload["data"]["completedVariations"] < 20


def test_refused_destinations_and_a_missing_secret_leave_nothing_behind(tmp_path, media):
    def attempt(settings, url):
        app = create_app(settings)
        client = app.test_client()
        token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
        data = {"videos": [(open(media["clip"], "rb"), "clip.mp4")], "webhookUrl": url}
        r = client.post(
            "/api/jobs", data=data, content_type="multipart/form-data", headers={"Authorization": f"Bearer {token}"}
        )
        store = app.extensions["refresher"].store
        assert store.list_jobs() == [] and not list((settings.data_dir / "jobs").glob("*/*"))
        return r.status_code, r.get_json()["error"]

    status, error = attempt(make_settings(tmp_path / "a"), "https://8.8.8.8/hook")
    assert status == 400 and "WEBHOOK_SECRET" in error
    keyed = make_settings(tmp_path / "b", webhook_secret=SECRET)
    for url, reason in [
        ("http://127.0.0.1:9/", "loopback"),
        ("http://169.254.169.254/", "cloud metadata"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("gopher://8.8.8.8/", "http:// or https://"),
    ]:
        status, error = attempt(keyed, url)
        assert status == 400 and error.startswith("webhookUrl") and reason in error, error


@pytest.mark.e2e  # a supervisor process stopped and started again
def test_a_restart_between_attempts_neither_loses_nor_repeats_the_delivery(make_service, receiver, media):
    svc = make_service(webhook_secret=SECRET, webhook_retry_seconds=(3.0,), webhook_allow_private=True)
    receiver.answers["/restart"] = [500]
    job_id = _submit(svc, media["clip"], 1, receiver.url("/restart"))["jobId"]
    wait_until(lambda: receiver.to("/restart"), timeout=30)
    svc.supervisor.stop()  # between the failed attempt and its retry
    assert len(receiver.to("/restart")) == 1
    svc.supervisor = SupervisorHandle(svc.settings, svc.control).start()
    assert svc.supervisor.wait_ready()
    first, second = wait_until(lambda: len(receiver.to("/restart")) >= 2 and receiver.to("/restart"), timeout=30)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    wait_until(lambda: svc.get(f"/api/jobs/{job_id}").get_json()["webhook"]["deliveredAt"])
    time.sleep(1.2)
    assert len(receiver.to("/restart")) == 2


def test_on_many_hosts_exactly_one_delivers_each_webhook(cluster, receiver, media, tmp_path):
    """Two worker processes on one PostgreSQL, both looking for due deliveries
    every second: each job's end reaches the receiver once. The jobs are
    made with the command-line client's --webhook."""
    web, hosts, store = cluster(workers=2, WEBHOOK_SECRET=SECRET, WEBHOOK_ALLOW_PRIVATE=1, WEBHOOK_RETRY_SECONDS="0.5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRESHER_")}
    env.update(
        HOME=str(tmp_path / "home"),
        REFRESHER_URL=web.url,
        REFRESHER_TOKEN=web.session.headers["Authorization"].removeprefix("Bearer "),
    )
    paths = [f"/hosts/{i}" for i in range(4)]
    receiver.answers[paths[0]] = [500]  # one retry, too, is made once
    jobs = []
    for path in paths:
        r = subprocess.run(
            [sys.executable, "-m", "refresher.client", "submit", str(media["clip"]), "-n", "1",
             "--webhook", receiver.url(path)],
            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        jobs.append(r.stdout.strip())
    for job_id in jobs:
        wait_until(lambda job_id=job_id: job_of(web, job_id)["webhook"]["deliveredAt"], timeout=60)
    time.sleep(2.5)  # both hosts have looked again, twice
    assert [len(receiver.to(path)) for path in paths] == [2, 1, 1, 1]
    first, again = receiver.to(paths[0])
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert {_verified(receiver.to(path)[-1])["data"]["jobId"] for path in paths} == set(jobs)
    assert [job_of(web, job_id)["webhook"]["attempts"] for job_id in jobs] == [2, 1, 1, 1]
    status = subprocess.run(
        [sys.executable, "-m", "refresher.client", "status", jobs[0]],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert f"webhook {receiver.url(paths[0])}: delivered" in status.stdout, status.stdout
    assert "(2 attempts); last error: answered 500" in status.stdout, status.stdout
