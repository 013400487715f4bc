"""The web form over Flask's test client: signing in and out, the cookie
session on the API with its CSRF protection, security headers, escaping."""

from __future__ import annotations

import html
import re
import time


from refresher.webapp import create_app

from .conftest import PASSWORD, make_settings

XSS_NAME = "<img src=x onerror=alert(1)>.mp4"


def form_token(page_html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1)


def page_token(page_html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page_html).group(1)


def sign_in(client, password=PASSWORD, **request):
    token = form_token(client.get("/login", **request).get_data(as_text=True))
    return client.post("/login", data={"password": password, "csrf_token": token}, **request)


def signed_in_token(client) -> str:
    """Sign in; return the CSRF token the pages carry."""
    assert sign_in(client).status_code == 302
    return page_token(client.get("/").get_data(as_text=True))


def bearer(client) -> dict:
    token = client.post("/api/auth", json={"password": PASSWORD}).get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


def upload(client, media, name, headers):
    data = {"videos": [(open(media["clip"], "rb"), name)], "variations": "2"}
    return client.post("/api/jobs", data=data, content_type="multipart/form-data", headers=headers)


# --- signing in and out ---------------------------------------------------------


def test_pages_send_a_signed_out_browser_to_sign_in(client):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    r = client.get("/jobs/abc")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/jobs/abc"
    assert client.get("/api/jobs").status_code == 401


def test_sign_in_sets_a_protected_cookie_and_opens_the_pages(client):
    r = sign_in(client)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("refresher_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie, "plain HTTP (a LAN install) keeps working"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert 'id="upload-form"' in page.get_data(as_text=True)
    assert client.get("/api/jobs").status_code == 200, "the cookie works on the API"
    assert client.get("/login").status_code == 302, "a signed-in browser skips the sign-in page"


def test_the_cookie_is_secure_over_https(client):
    r = sign_in(client, base_url="https://localhost")
    assert r.status_code == 302
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("refresher_session="))
    assert "; Secure" in cookie


def test_the_cookie_is_secure_behind_a_trusted_https_proxy(tmp_path):
    app = create_app(make_settings(tmp_path / "data", trust_proxy_hops=1))
    r = sign_in(app.test_client(), headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 302
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("refresher_session="))
    assert "; Secure" in cookie


def test_wrong_password_is_refused_with_a_message(client):
    r = sign_in(client, "not it")
    assert r.status_code == 401
    assert "That password is not right" in r.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert client.get("/api/jobs").status_code == 401


def test_sign_in_needs_the_form_token(client):
    client.get("/login")
    r = client.post("/login", data={"password": PASSWORD})
    assert r.status_code == 400 and client.get("/api/jobs").status_code == 401
    r = client.post("/login", data={"password": PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 400 and client.get("/api/jobs").status_code == 401


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(client):
    token = form_token(client.get("/login?next=/jobs/abc").get_data(as_text=True))
    r = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": "/jobs/abc"})
    assert r.headers["Location"] == "/jobs/abc"
    for target in (
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        " //evil.example",
    ):
        client.post("/logout", data={"csrf_token": page_token(client.get("/").get_data(as_text=True))})
        token = form_token(client.get("/login").get_data(as_text=True))
        r = client.post("/login", data={"password": PASSWORD, "csrf_token": token, "next": target})
        assert r.status_code == 302 and r.headers["Location"] == "/", target


def test_failed_sign_ins_are_throttled_and_successful_ones_are_not(client):
    for _ in range(12):
        assert sign_in(client).status_code == 302
        client.post("/logout", data={"csrf_token": page_token(client.get("/").get_data(as_text=True))})
    for _ in range(10):
        assert sign_in(client, "wrong").status_code == 401
    r = sign_in(client, "wrong")
    assert r.status_code == 429 and "Too many wrong passwords" in r.get_data(as_text=True)
    assert r.mimetype == "text/html" and "Retry-After" in r.headers


def test_the_form_and_the_api_share_one_budget_of_failed_sign_ins(client):
    for _ in range(5):
        assert sign_in(client, "wrong").status_code == 401
        assert client.post("/api/auth", json={"password": "wrong"}).status_code == 401
    # ten failures in all, half on each route: both are now closed
    assert sign_in(client, "wrong").status_code == 429
    r = client.post("/api/auth", json={"password": "wrong"})
    assert r.status_code == 429 and r.is_json and "Retry-After" in r.headers
    assert client.post("/api/auth", json={"password": PASSWORD}).status_code == 429, "until the window ends"


def test_sign_out_needs_the_token_and_ends_the_session(client):
    token = signed_in_token(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/api/jobs").status_code == 200, "still signed in"
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/").status_code == 302


def test_sign_out_ends_the_session_on_the_server_too(app, client):
    token = signed_in_token(client)
    kept = client.get_cookie("refresher_session").value  # e.g. stolen, or a second tab's copy
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("refresher_session", kept)
    assert thief.get("/api/jobs").status_code == 401
    r = thief.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 401
    assert thief.get("/").status_code == 302


def test_the_page_session_can_sign_out_through_the_api(app, client):
    token = signed_in_token(client)
    kept = client.get_cookie("refresher_session").value
    assert client.delete("/api/auth").status_code == 403, "a cookie needs the CSRF header"
    assert client.get("/api/jobs").status_code == 200
    assert client.delete("/api/auth", headers={"X-CSRF-Token": token}).status_code == 204
    assert client.get("/api/jobs").status_code == 401
    thief = app.test_client()
    thief.set_cookie("refresher_session", kept)
    assert thief.get("/api/jobs").status_code == 401


def test_ending_every_session_signs_out_browsers_and_tokens(app, client):
    other_browser = app.test_client()
    signed_in_token(other_browser)
    headers = bearer(client)
    assert client.delete("/api/auth?all=1", headers=headers).status_code == 204
    assert other_browser.get("/api/jobs").status_code == 401 and other_browser.get("/").status_code == 302
    signed_in_token(other_browser)
    assert other_browser.get("/api/jobs").status_code == 200, "signing in again works"


def test_browser_session_expires_with_the_token_lifetime(tmp_path):
    client = create_app(make_settings(tmp_path / "data", token_ttl_seconds=1)).test_client()
    signed_in_token(client)
    assert client.get("/api/jobs").status_code == 200
    time.sleep(2.1)
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/").status_code == 302


def test_a_new_password_signs_every_browser_out(tmp_path):
    data_dir = tmp_path / "data"
    old = create_app(make_settings(data_dir)).test_client()
    signed_in_token(old)
    cookie = old.get_cookie("refresher_session")
    new = create_app(make_settings(data_dir, auth_password="a brand new password")).test_client()
    new.set_cookie("refresher_session", cookie.value)
    assert new.get("/api/jobs").status_code == 401
    same = create_app(make_settings(data_dir)).test_client()
    same.set_cookie("refresher_session", cookie.value)
    assert same.get("/api/jobs").status_code == 200, "the cookie itself is fine"


# --- the cookie on the API: CSRF -----------------------------------------------------


def test_cookie_requests_that_change_something_need_the_csrf_header(client):
    token = signed_in_token(client)
    for method, url in [
        ("post", "/api/tokens"),
        ("delete", "/api/jobs/nope"),
        ("post", "/api/jobs/nope/cancel"),
        ("delete", "/api/tokens/nope"),
        ("post", "/api/jobs"),
    ]:
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
            r = getattr(client, method)(url, headers=headers, json={"name": "x"})
            assert r.status_code == 403, (method, url, headers)
            assert "X-CSRF-Token" in r.get_json()["error"]
    headers = {"X-CSRF-Token": token}
    r = client.post("/api/tokens", json={"name": "from the browser"}, headers=headers)
    assert r.status_code == 201, "a cookie session is a password session"
    assert client.delete(f"/api/tokens/{r.get_json()['id']}", headers=headers).status_code == 204
    assert client.delete("/api/jobs/nope", headers=headers).status_code == 404
    assert client.post("/api/jobs/nope/cancel", headers=headers).status_code == 404


def test_cookie_reads_need_no_csrf_header(client):
    signed_in_token(client)
    assert client.get("/api/jobs").status_code == 200
    assert client.get("/api/tokens").status_code == 200
    assert client.get("/api/jobs/nope/thumbnail").status_code == 404


def test_cookie_upload_without_csrf_header_is_refused_and_leaves_nothing(app, client, media):
    token = signed_in_token(client)
    r = upload(client, media, "ad.mp4", {})
    assert r.status_code == 403
    assert client.get("/api/jobs").get_json() == []
    assert not list((app.extensions["refresher"].settings.data_dir / "incoming").glob("*/*"))
    r = upload(client, media, "ad.mp4", {"X-CSRF-Token": token})
    assert r.status_code == 202 and r.get_json()["files"][0]["name"] == "ad.mp4"


def test_bearer_requests_need_no_csrf_token(client):
    headers = bearer(client)
    r = client.post("/api/tokens", json={"name": "ci"}, headers=headers)
    assert r.status_code == 201
    api_token = {"Authorization": f"Bearer {r.get_json()['token']}"}
    assert client.delete("/api/jobs/nope", headers=api_token).status_code == 404
    assert client.post("/api/tokens", json={"name": "x"}, headers=api_token).status_code == 403


def test_a_bad_bearer_header_is_not_rescued_by_the_cookie(client):
    token = signed_in_token(client)
    r = client.get("/api/jobs", headers={"Authorization": "Bearer garbage", "X-CSRF-Token": token})
    assert r.status_code == 401
    r = client.get("/api/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401


def test_the_csrf_token_is_per_session(app):
    first, second = app.test_client(), app.test_client()
    first_token = signed_in_token(first)
    second_token = signed_in_token(second)
    assert first_token != second_token
    r = second.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": first_token})
    assert r.status_code == 403


# --- headers and escaping ---------------------------------------------------------------


def test_security_headers_on_pages_assets_and_api(client):
    signed_in_token(client)
    for url in ("/", "/login", "/assets/js/index.js", "/assets/css/app.css", "/api/jobs", "/api/health"):
        r = client.get(url)
        csp = r.headers.get("Content-Security-Policy", "")
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'", url
        assert "unsafe-inline" not in directives["script-src"] and "unsafe-eval" not in csp
        assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_script_styles_or_event_handlers(app, client, media):
    signed_in_token(client)
    job_id = upload(client, media, "ad.mp4", bearer(client)).get_json()["jobId"]
    pages = {"/login": app.test_client().get("/login").get_data(as_text=True)}
    for url in ("/", f"/jobs/{job_id}"):
        pages[url] = client.get(url).get_data(as_text=True)
    for url, page in pages.items():
        for tag in re.findall(r"<script\b[^>]*>", page):
            assert 'src="/assets/' in tag or 'type="application/json"' in tag, (url, tag)
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), url
        assert "style=" not in page and "<style" not in page, url


def test_assets_are_served_locally_with_the_right_types(client):
    assert client.get("/assets/js/index.js").mimetype in ("text/javascript", "application/javascript")
    assert client.get("/assets/css/app.css").mimetype == "text/css"
    assert client.get("/assets/icons.svg").mimetype == "image/svg+xml"
    signed_in_token(client)
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page), "nothing from another site"


def test_a_hostile_file_name_is_never_rendered_as_markup(client, media):
    signed_in_token(client)
    r = upload(client, media, XSS_NAME, bearer(client))
    assert r.status_code == 202
    job_id = r.get_json()["jobId"]
    assert client.get(f"/api/jobs/{job_id}").get_json()["files"][0]["name"] == XSS_NAME
    for url in ("/", f"/jobs/{job_id}"):
        page = client.get(url).get_data(as_text=True)
        assert "<img src=x" not in page and "onerror=alert(1)>" not in page, url
        assert "\\u003cimg src=x onerror=alert(1)\\u003e.mp4" in page, "the embedded JSON is escaped"
    job_page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'<h1 id="job-title" title="{html.escape(XSS_NAME)}">{html.escape(XSS_NAME)}</h1>' in job_page


def test_unknown_job_page_is_a_page_not_json(client):
    signed_in_token(client)
    r = client.get("/jobs/nope")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert "Job not found" in r.get_data(as_text=True)


def test_a_queued_job_says_on_its_page_when_no_host_encodes(app, client, media):
    """A web process with ENCODE_WORKERS=0 and no worker process: the job
    waits, and its page says why; once a host beats, the page says nothing."""
    signed_in_token(client)
    job_id = upload(client, media, "ad.mp4", bearer(client)).get_json()["jobId"]

    def notice() -> str:
        page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
        return re.search(r'<p class="alert alert-info" id="job-no-host"[^>]*>\s*([^<]*)', page).group(0)

    shown = notice()
    assert " hidden" not in shown and "No encoding host is running, so this job waits in the queue" in shown
    app.extensions["refresher"].store.heartbeat("worker.1", "a-run", 4242, time.time())
    assert " hidden" in notice()
