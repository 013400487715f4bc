"""Browser notifications in headless Chromium, against one real gunicorn for
the module: the offer after a first job, one notification across two open
tabs when it ends, the tab's title while it runs, the setting that turns
them off, a declined offer that never comes back; and the job page showing
how its webhook went.

Headless Chromium shows no notifications anywhere a test can see, so an
init script puts a recorder in place of `window.Notification` (it keeps what
the page asked to show, and passes permission questions to the real one);
the permission itself is granted through the browser context."""

from __future__ import annotations

import base64
import re
import time

import pytest

from .conftest import PASSWORD, GunicornServer, PageProblems
from .support.receiver import Receiver

RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  window.__titles = [];
  document.addEventListener('DOMContentLoaded', () => {
    const title = document.querySelector('title');
    new MutationObserver(() => window.__titles.push(document.title))
      .observe(title, { childList: true, characterData: true, subtree: true });
  });
  if (!Real) return;
  class Recorded {
    constructor(title, options = {}) {
      this.title = title;
      this.body = options.body;
      this.onclick = null;
      window.__notifications.push(this);
    }
    close() {}
    static get permission() { return Real.permission; }
    static requestPermission(...args) { return Real.requestPermission(...args); }
  }
  window.Notification = Recorded;
})();
"""


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = GunicornServer(
        tmp_path_factory.mktemp("notifications") / "data",
        ENCODE_WORKERS=2,
        WEBHOOK_SECRET="whsec_" + base64.b64encode(b"w" * 32).decode(),
        WEBHOOK_ALLOW_PRIVATE=1,
        WEBHOOK_RETRY_SECONDS="0.3",
    ).start()
    yield started
    started.stop()
    started.kill_leftovers()


@pytest.fixture
def context(browser, server):
    made = browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(30_000)
    made.grant_permissions(["notifications"], origin=server.url)
    made.add_init_script(RECORD_NOTIFICATIONS)
    pages = []

    def open_page(path: str = "/"):
        page = made.new_page()
        page.problems = PageProblems(page)
        page.job_polls = []  # GET /api/jobs/<id>: what the tab that watches for ends asks
        page.on(
            "request",
            lambda request: re.search(r"/api/jobs/[^/?]+$", request.url) and page.job_polls.append(request.url),
        )
        page.goto(server.url + path)
        pages.append(page)
        return page

    made.open_page = open_page
    yield made
    made.close()
    for page in pages:
        assert page.problems.errors == [], page.problems.errors


def sign_in(context, server):
    page = context.open_page()
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    return page


def upload(page, media, name: str, variations: int = 2):
    page.set_input_files("#videos", str(media["clip"]))
    page.fill("#variations", str(variations))
    page.fill("#job-name", name)
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.alert-success")


def job_named(server, name: str) -> dict:
    return next(job for job in server.session.get(f"{server.url}/api/jobs").json() if job["name"] == name)


def wait_ended(server, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_named(server, name)
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{name} did not end")


def shown(*pages) -> list[list[str]]:
    return [n for page in pages for n in page.evaluate("window.__notifications.map((n) => [n.title, n.body])")]


def wait_shown(pages, count: int, timeout: float = 30) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = shown(*pages)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} notification(s) expected, {shown(*pages)} shown")


def test_a_finished_job_is_notified_once_across_tabs_and_the_setting_turns_it_off(context, server, media):
    page = sign_in(context, server)
    other = context.open_page("/")  # a second tab of the service
    upload(page, media, "Spring sale")
    page.click("#notify-accept")  # the offer that follows a first job
    assert page.locator("#notify-offer").count() == 0
    assert page.is_checked("#notify-setting")

    [[title, body]] = wait_shown([page, other], 1)
    assert (title, body) == ("Spring sale", "2 of 2 variations ready")
    time.sleep(4.5)  # two more looks by whichever tab watches
    assert len(shown(page, other)) == 1
    assert bool(page.job_polls) != bool(other.job_polls), "one tab, and only one, watches"
    titles = page.evaluate("window.__titles")
    assert any(re.fullmatch(r"\d+ % · Jobs · Video Refresher", t) for t in titles), titles
    # (a function: an expression is evaluated with eval, which the page's CSP refuses when it has to wait)
    page.wait_for_function("() => document.title === 'Jobs · Video Refresher'")

    # a click opens the job's page, in the tab that showed it
    job_id = job_named(server, "Spring sale")["id"]
    showing = page if shown(page) else other
    showing.evaluate("window.__notifications[0].onclick()")
    showing.wait_for_url(f"{server.url}/jobs/{job_id}")

    # the setting turns them off: the next job ends without one, and without an offer
    page.goto(server.url + "/")
    page.uncheck("#notify-setting")
    before = shown(page, other)
    upload(page, media, "Quiet one", variations=1)
    assert page.locator("#notify-offer").count() == 0
    wait_ended(server, "Quiet one")
    time.sleep(3)
    assert shown(page, other) == before


def test_a_declined_offer_means_no_notification_and_no_second_offer(context, server, media):
    page = sign_in(context, server)
    upload(page, media, "Declined", variations=1)
    page.click("#notify-decline")
    assert not page.is_checked("#notify-setting")
    wait_ended(server, "Declined")
    time.sleep(3)
    assert shown(page) == []
    page.reload()
    upload(page, media, "Declined again", variations=1)
    assert page.locator("#notify-offer").count() == 0
    wait_ended(server, "Declined again")
    time.sleep(3)
    assert shown(page) == []


def test_the_job_page_shows_how_the_webhook_went(context, server, media, receiver):
    receiver.answers["/page"] = [500]
    with open(media["clip"], "rb") as f:
        r = server.session.post(
            f"{server.url}/api/jobs",
            files=[("videos", ("clip.mp4", f, "video/mp4"))],
            data={"variations": "1", "webhookUrl": receiver.url("/page")},
        )
    assert r.status_code == 202, r.text
    page = sign_in(context, server)
    page.goto(f"{server.url}/jobs/{r.json()['jobId']}")
    line = page.locator("#job-webhook")
    assert receiver.url("/page") in line.inner_text()
    page.wait_for_function(
        "() => document.getElementById('job-webhook').textContent.includes('delivered (2 attempts)')"
    )
    assert len(receiver.to("/page")) == 2
