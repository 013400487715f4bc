"""The web form in a real browser: headless Chromium driven by Playwright,
against a real gunicorn with its supervisor, pool and real ffmpeg.

Chromium comes from the system (`apt-get install chromium`); without it these
tests fail with a message saying so rather than skip.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import FFMPEG, PASSWORD, ROOT, PageProblems
from .support.proxy import Relay

CHUNK_BYTES = 10 * 1024 * 1024  # what one PATCH of the page carries (static/js/resumable.js)

XSS_NAME = "<img src=x onerror=alert(1)>.mp4"


def sign_in(page, server):
    page.goto(server.url + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def drop_file(page, path: Path, name: str | None = None):
    """Drop a file on the drop zone, as dragging it from the desktop does."""
    page.evaluate(
        """([name, encoded]) => {
        const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: 'video/mp4' }));
        const zone = document.getElementById('dropzone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
        }
    }""",
        [name or path.name, base64.b64encode(path.read_bytes()).decode()],
    )


def record_values(page, selector: str, attribute: str, name: str):
    """Collect every value `attribute` of `selector` takes, in window[name],
    beginning with the one it has now (a job may be further than its page thought)."""
    page.evaluate(
        """([selector, attribute, name]) => {
        const element = document.querySelector(selector);
        window[name] = [element.getAttribute(attribute)];
        new MutationObserver(() => window[name].push(element.getAttribute(attribute)))
            .observe(element, { attributes: true, attributeFilter: [attribute] });
    }""",
        [selector, attribute, name],
    )


def record_button_states(page, selector: str, name: str):
    page.evaluate(
        """([selector, name]) => {
        const button = document.querySelector(selector);
        window[name] = [];
        const note = () => window[name].push({ text: button.textContent.trim(), disabled: button.disabled });
        new MutationObserver(note).observe(button,
                                           { attributes: true, childList: true, subtree: true, characterData: true });
    }""",
        [selector, name],
    )


def throttle_uploads(page, bytes_per_second: int):
    """Slow the browser's uploads down (-1: full speed), so an upload can be watched."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second},
    )


def card(page, job_id: str):
    return page.locator(f'.job-card[data-job-id="{job_id}"]')


def newest_job_id(page) -> str:
    page.wait_for_selector(".job-card")
    return page.locator(".job-card").first.get_attribute("data-job-id")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sign_in_upload_preview_download_and_delete(gunicorn_server, media, page):
    server = gunicorn_server(ENCODE_WORKERS=2)
    page.goto(server.url + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "That password is not right" in page.locator("#signin-error").inner_text()
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")

    page.set_input_files("#videos", str(media["clip"]))
    drop_file(page, media["clip2"])
    chosen = page.locator(".chosen-file")
    assert chosen.count() == 2
    assert chosen.locator(".chosen-name").all_inner_texts() == ["clip.mp4", "second clip.mp4"]
    for size in chosen.locator(".chosen-size").all_inner_texts():
        assert re.fullmatch(r"\d+(\.\d)? KB", size), size
    page.fill("#variations", "2")
    record_values(page, "#upload-progress .progress", "aria-valuenow", "uploadProgress")
    throttle_uploads(page, 150_000)
    page.click("#upload-submit")
    page.locator("#upload-status", has_text="Uploading ·").wait_for()
    assert page.locator("#upload-progress .progress-bar").bounding_box()["height"] > 0
    assert page.locator("#upload-submit").is_disabled() and page.locator("#upload-abort").is_visible()
    page.wait_for_selector("#upload-message.alert-success")
    throttle_uploads(page, -1)
    assert "Job created: 2 videos × 2 variations" in page.inner_text("#upload-message")
    upload_progress = [int(v) for v in page.evaluate("window.uploadProgress") if v is not None]
    assert upload_progress and upload_progress[-1] == 100 and upload_progress == sorted(upload_progress)
    assert page.locator(".chosen-file").count() == 0

    job_id = newest_job_id(page)
    record_values(page, f'.job-card[data-job-id="{job_id}"] .progress', "aria-valuenow", "jobProgress")
    job_card = card(page, job_id)
    assert job_card.locator(".job-title").inner_text() == "clip.mp4 and 1 more"
    job_card.locator(".badge", has_text="Completed").wait_for(timeout=90_000)
    job_progress = [int(v) for v in page.evaluate("window.jobProgress") if v is not None]
    assert job_progress[-1] == 100 and job_progress == sorted(job_progress), job_progress
    assert job_card.locator(".job-thumb img").evaluate("img => img.complete && img.naturalWidth > 0")

    job_card.locator(".job-title").click()
    page.wait_for_url(f"{server.url}/jobs/{job_id}")
    assert page.locator("#job-badge").inner_text() == "Completed"
    assert page.locator("#job-progress-label").inner_text().startswith("100 %")
    assert page.locator("#job-times dt").all_text_contents() == ["Created", "Started", "Finished", "Kept until"]
    assert page.locator(".source").count() == 2
    variations = page.locator(".variation")
    variations.nth(3).wait_for()
    assert variations.count() == 4
    for i in range(4):
        assert variations.nth(i).locator(".effects > div").count() >= 1, "every variation shows its effects"

    video = variations.first.locator("video")
    video.scroll_into_view_if_needed()
    page.wait_for_function("v => v.currentSrc !== ''", arg=video.element_handle())
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.readyState >= 2 && v.currentTime > 0.2", arg=video.element_handle(), timeout=20_000)
    assert video.evaluate("v => v.duration") == pytest.approx(2.0, abs=0.3)

    with page.expect_download() as one:
        variations.first.locator("a[download]").click()
    assert one.value.suggested_filename.endswith(".mp4")
    assert Path(one.value.path()).read_bytes()[4:8] == b"ftyp"

    with page.expect_download() as everything:
        page.click("#download-all")
    archive = zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes()))
    assert archive.testzip() is None
    names = archive.namelist()
    assert "manifest.json" in names and len([n for n in names if n.endswith(".mp4")]) == 4

    page.click("#delete-job")
    page.locator("#confirm-dialog").wait_for()
    page.click("#confirm-accept")
    page.wait_for_url(server.url + "/")
    page.locator("#jobs-empty").wait_for()
    assert server.session.get(f"{server.url}/api/jobs/{job_id}").status_code == 404

    page.click(".signout button")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(server.url + "/")
    page.wait_for_url(re.compile(r"/login"))


def test_cancel_from_the_job_page_and_from_the_list(gunicorn_server, media, page):
    server = gunicorn_server(ENCODE_WORKERS=1)
    sign_in(page, server)
    page.set_input_files("#videos", str(media["long"]))
    page.fill("#variations", "20")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.alert-success")
    running_id = newest_job_id(page)
    page.set_input_files("#videos", str(media["clip"]))
    page.fill("#variations", "3")
    page.click("#upload-submit")
    wait_for(lambda: newest_job_id(page) != running_id, 30, "the second job in the list")
    queued_id = newest_job_id(page)

    # The queued job, from its page: the first Escape keeps it, then it is cancelled.
    card(page, queued_id).locator(".job-title").click()
    page.wait_for_url(f"{server.url}/jobs/{queued_id}")
    assert page.locator("#job-badge").inner_text() == "Queued"
    page.click("#cancel-job")
    page.locator("#confirm-dialog").wait_for()
    page.keyboard.press("Escape")
    page.locator("#confirm-dialog").wait_for(state="hidden")
    assert page.locator("#job-badge").inner_text() == "Queued"
    page.click("#cancel-job")
    page.click("#confirm-accept")
    page.locator("#job-badge", has_text="Cancelled (0/3)").wait_for()
    assert page.locator("#cancel-job").is_hidden() and page.locator("#delete-job").is_visible()
    assert server.session.get(f"{server.url}/api/jobs/{queued_id}").json()["status"] == "cancelled"

    # The running job's page follows it live: finished variations appear by themselves.
    streams = []
    page.on("request", lambda request: streams.append(request.url) if request.url.endswith("/events") else None)
    page.click(".breadcrumb a")
    page.wait_for_url(server.url + "/")
    card(page, running_id).locator(".job-title").click()
    page.wait_for_url(f"{server.url}/jobs/{running_id}")
    shown = page.locator(".variation").count()
    page.locator(".variation").nth(shown).wait_for(timeout=120_000)
    assert f"{server.url}/api/jobs/{running_id}/events" in streams

    # Then it is cancelled from the list.
    page.click(".breadcrumb a")
    page.wait_for_url(server.url + "/")
    running = card(page, running_id)
    running.locator(".badge", has_text="Processing").wait_for()
    cancel = running.locator('[data-action="cancel"]')

    page.route(
        "**/api/jobs/*/cancel",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"error": "the server is restarting"}'
        ),
    )
    cancel.click()
    page.click("#confirm-accept")
    running.locator(".job-action-error", has_text="Could not cancel: the server is restarting.").wait_for()
    assert cancel.is_enabled() and cancel.inner_text() == "Cancel"
    page.unroute("**/api/jobs/*/cancel")

    record_button_states(page, f'.job-card[data-job-id="{running_id}"] [data-action="cancel"]', "cancelStates")
    cancel.click()
    page.click("#confirm-accept")
    badge = running.locator(".badge")
    badge.filter(has_text=re.compile(r"^Cancelled \(\d+/20\)$")).wait_for(timeout=30_000)
    assert {"text": "Cancelling…", "disabled": True} in page.evaluate("window.cancelStates")
    assert running.locator(".job-action-error").is_hidden(), "the earlier error is gone"
    job = server.session.get(f"{server.url}/api/jobs/{running_id}").json()
    assert job["status"] == "cancelled" and 1 <= job["completedVariations"] < 20
    assert badge.inner_text() == f"Cancelled ({job['completedVariations']}/20)"
    red, green, blue = map(int, re.findall(r"\d+", badge.evaluate("b => getComputedStyle(b).color"))[:3])
    assert max(red, green, blue) - min(red, green, blue) < 40, "a neutral grey, not an alarming colour"
    assert running.locator('[data-action="download"]').is_visible(), "finished variations stay downloadable"


def test_rejected_files_and_hostile_names_on_a_phone(gunicorn_server, media, page, tmp_path):
    server = gunicorn_server(ENCODE_WORKERS=1)
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server)
    hostile = tmp_path / XSS_NAME
    shutil.copy(media["clip"], hostile)
    brochure = tmp_path / "brochure.pdf"
    brochure.write_bytes(b"%PDF-1.4 not a video")

    page.set_input_files("#videos", str(brochure))
    assert page.inner_text("#upload-message") == "brochure.pdf is not an MP4 or MOV video."
    assert page.locator(".chosen-file").count() == 0

    page.set_input_files("#videos", [str(media["clip"]), str(media["not_video"])])
    page.click("#upload-submit")
    message = page.locator("#upload-message.alert-error")
    message.wait_for()
    assert message.inner_text().startswith("notes.mp4 is not a readable MP4/MOV video")
    refused = page.locator(".chosen-file.is-refused")
    assert refused.count() == 1 and refused.locator(".chosen-name").inner_text() == "notes.mp4", (
        "the file the server refused is marked in the list"
    )
    assert refused.locator(".chosen-problem").is_visible()
    page.click('[aria-label="Remove notes.mp4"]')
    page.click('[aria-label="Remove clip.mp4"]')
    assert page.locator(".chosen-file").count() == 0

    page.set_input_files("#videos", str(hostile))
    assert page.locator(".chosen-name").inner_text() == XSS_NAME
    page.fill("#variations", "1")
    throttle_uploads(page, 20_000)
    page.click("#upload-submit")
    page.click("#upload-abort")
    assert page.inner_text("#upload-message") == "The upload was stopped."
    assert page.locator(".chosen-file").count() == 1 and page.locator("#upload-submit").is_enabled()
    throttle_uploads(page, -1)
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.alert-success")
    job_id = newest_job_id(page)
    assert card(page, job_id).locator(".job-title").inner_text() == XSS_NAME
    assert page.locator('img[src="x"]').count() == 0
    card(page, job_id).locator(".job-title").click()
    page.wait_for_url(f"{server.url}/jobs/{job_id}")
    assert page.inner_text("h1") == XSS_NAME
    assert page.locator(".source-name").inner_text() == XSS_NAME
    page.locator(".variation").first.wait_for(timeout=60_000)
    assert page.locator('img[src="x"]').count() == 0

    # Phone-sized and keyboard-friendly: nothing wider than the screen, and
    # Tab from the top reaches the file picker with a visible focus ring.
    page.goto(server.url + "/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    fields = page.locator(".upload-form .fields").bounding_box()
    button = page.locator("#upload-submit").bounding_box()
    assert abs(button["width"] - fields["width"]) < 1, "the button is as wide as the fields"
    job_card = card(page, job_id).bounding_box()
    thumb = card(page, job_id).locator(".job-thumb").bounding_box()
    assert thumb["y"] - job_card["y"] < 16, "no blank space above the thumbnail"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "videos":
            break
    else:
        raise AssertionError("Tab never reached the file picker")
    ring = page.locator(".dropzone-label").evaluate("label => getComputedStyle(label).boxShadow")
    assert ring not in ("", "none")


def api_job(server, job_id) -> dict:
    return server.session.get(f"{server.url}/api/jobs/{job_id}").json()


def api_submit(server, paths, variations, **fields) -> str:
    files = [("videos", (Path(p).name, open(p, "rb"), "video/mp4")) for p in paths]
    r = server.session.post(f"{server.url}/api/jobs", files=files, data={"variations": str(variations), **fields})
    assert r.status_code == 202, r.text
    return r.json()["jobId"]


def test_retry_failed_variations_from_the_job_page(gunicorn_server, media, page, tmp_path):
    switch = tmp_path / "fail-clip2"
    switch.touch()
    server = gunicorn_server(
        ENCODE_WORKERS=2,
        FFMPEG_BINARY=ROOT / "tests" / "fakes" / "failing_ffmpeg.py",
        REAL_FFMPEG=FFMPEG,
        FAIL_SWITCH=switch,
        FAIL_INPUT_SIZE=media["clip2"].stat().st_size,
    )
    job_id = api_submit(server, [media["clip"], media["clip2"]], 1, name="Spring sale")
    wait_for(lambda: api_job(server, job_id)["status"] == "completed", 60, "the job to end")
    sign_in(page, server)
    assert card(page, job_id).locator(".job-title").inner_text() == "Spring sale"
    page.goto(f"{server.url}/jobs/{job_id}")
    assert page.inner_text("h1") == "Spring sale" and page.title().startswith("Spring sale")
    assert page.locator(".variation").count() == 1
    assert page.locator("#resume-job").is_hidden() and page.locator("#rerun-job").is_visible()
    retry = page.locator("#retry-job")
    assert retry.is_visible() and retry.inner_text() == "Retry failed variations"

    switch.unlink()
    retry.click()
    page.locator(".variation").nth(1).wait_for(timeout=60_000)
    page.locator("#job-badge", has_text="Completed").wait_for()
    assert retry.is_hidden(), "no failure left to retry"
    assert all(error.is_hidden() for error in page.locator(".source-error").all())
    assert api_job(server, job_id)["completedVariations"] == 2


def test_resume_a_cancelled_job_from_its_page(gunicorn_server, media, page):
    server = gunicorn_server(ENCODE_WORKERS=1)
    job_id = api_submit(server, [media["long"]], 3)
    never_started = api_submit(server, [media["clip"]], 1)
    assert server.session.post(f"{server.url}/api/jobs/{never_started}/cancel").json()["status"] == "cancelled"
    wait_for(lambda: api_job(server, job_id)["completedVariations"] >= 1, 60, "a first variation")
    assert server.session.post(f"{server.url}/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    made = api_job(server, job_id)["completedVariations"]
    sign_in(page, server)

    # a job with no variation has no ZIP to speak of
    page.goto(f"{server.url}/jobs/{never_started}")
    page.click("#delete-job")
    page.locator("#confirm-dialog").wait_for()
    message = page.inner_text("#confirm-dialog")
    assert "no variation was made" in message and "ZIP" not in message
    page.keyboard.press("Escape")
    page.locator("#confirm-dialog").wait_for(state="hidden")

    page.goto(f"{server.url}/jobs/{job_id}")
    assert page.locator("#job-badge").inner_text() == f"Cancelled ({made}/3)"
    assert page.locator("#retry-job").is_hidden()
    page.click("#resume-job")
    page.locator("#job-badge", has_text="Completed").wait_for(timeout=90_000)
    page.locator(".variation").nth(2).wait_for()
    assert page.locator(".variation").count() == 3
    assert page.locator("#resume-job").is_hidden() and page.locator(".variations-pending").is_hidden()


def test_run_again_with_new_effects_from_the_job_page(gunicorn_server, media, page):
    server = gunicorn_server(ENCODE_WORKERS=2)
    sign_in(page, server)
    page.set_input_files("#videos", str(media["clip"]))
    page.fill("#variations", "1")
    page.fill("#seed", "first")
    page.fill("#job-name", "First take")
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.alert-success")
    assert page.input_value("#job-name") == ""
    job_id = newest_job_id(page)
    assert card(page, job_id).locator(".job-title").inner_text() == "First take"
    wait_for(lambda: api_job(server, job_id)["status"] == "completed", 60, "the job to end")
    page.goto(f"{server.url}/jobs/{job_id}")
    assert page.inner_text("h1") == "First take"
    assert page.locator("#rerun-form").is_hidden()
    page.click("#rerun-job")
    assert page.locator("#rerun-form").is_visible()
    assert page.locator("#rerun-job").get_attribute("aria-expanded") == "true"
    assert page.input_value("#rerun-variations") == "1"
    page.fill("#rerun-variations", "0")
    page.click("#rerun-submit")
    assert page.inner_text("#rerun-error") == "Choose from 1 to 20 variations per video."
    page.fill("#rerun-name", "Second take")
    page.fill("#rerun-variations", "2")
    page.click("#rerun-submit")
    page.wait_for_url(re.compile(r"/jobs/(?!" + re.escape(job_id) + r"$)[A-Za-z0-9_-]+$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert page.inner_text("h1") == "Second take"
    page.locator("#job-badge", has_text="Completed").wait_for(timeout=60_000)
    page.locator(".variation").nth(1).wait_for()
    again = api_job(server, new_id)
    assert again["seed"] != "first" and again["totalVariations"] == 2 and again["files"][0]["name"] == "clip.mp4"
    page.click(".breadcrumb a")
    page.wait_for_url(server.url + "/")
    assert card(page, new_id).locator(".job-title").inner_text() == "Second take"
    assert card(page, job_id).locator(".job-title").inner_text() == "First take"


def test_the_list_follows_a_job_retried_in_another_tab_back_to_the_queue(gunicorn_server, media, page, tmp_path):
    """A finished job goes back to the queue when it is retried: a list open in
    another tab must show it queued or running again, then finished, and not
    take the newer answer for a stale one because its status looks earlier."""
    switch = tmp_path / "fail-long"
    switch.touch()
    server = gunicorn_server(
        ENCODE_WORKERS=1,
        FFMPEG_BINARY=ROOT / "tests" / "fakes" / "failing_ffmpeg.py",
        REAL_FFMPEG=FFMPEG,
        FAIL_SWITCH=switch,
        FAIL_INPUT_SIZE=media["long"].stat().st_size,
    )
    job_id = api_submit(server, [media["long"]], 1, name="Autumn sale")
    wait_for(lambda: api_job(server, job_id)["status"] == "failed", 60, "the job to fail")
    failed = api_job(server, job_id)
    sign_in(page, server)
    listed = card(page, job_id)
    badge = listed.locator(".badge")
    assert badge.inner_text() == "Failed" and listed.get_attribute("data-status") == "failed"
    page.evaluate(
        """(selector) => {
        const badge = document.querySelector(selector);
        window.badgeTexts = [badge.textContent];
        new MutationObserver(() => window.badgeTexts.push(badge.textContent))
            .observe(badge, { childList: true, characterData: true, subtree: true });
    }""",
        f'.job-card[data-job-id="{job_id}"] .badge',
    )

    # Another tab: the job's page, where it is retried.
    other = page.context.new_page()
    other.problems = PageProblems(other)
    other.goto(f"{server.url}/jobs/{job_id}")
    switch.unlink()
    other.click("#retry-job")
    other.locator("#job-badge", has_text=re.compile(r"^(Queued|Processing)$")).wait_for()
    retried = api_job(server, job_id)
    assert retried["status"] in ("queued", "processing") and retried["revision"] > failed["revision"]

    # Back to the list's tab, which looks again as soon as it is shown.
    page.bring_to_front()
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    badge.filter(has_text=re.compile(r"^(Queued|Processing)$")).wait_for(timeout=10_000)
    assert listed.locator('[data-action="cancel"]').is_visible()
    assert listed.locator('[data-action="delete"]').is_hidden()
    badge.filter(has_text="Completed").wait_for(timeout=120_000)
    assert listed.get_attribute("data-status") == "completed"
    assert listed.locator('[data-action="download"]').is_visible()
    texts = page.evaluate("window.badgeTexts")
    assert texts[0] == "Failed" and texts[-1] == "Completed", texts
    back_again = [t for t in texts if t in ("Queued", "Processing")]
    assert back_again and texts.index(back_again[0]) < texts.index("Completed"), texts
    other.locator("#job-badge", has_text="Completed").wait_for(timeout=60_000)
    assert other.problems.errors == [] and other.problems.dialogs == []


def test_with_object_storage_the_page_shows_thumbnails_plays_and_downloads_from_the_bucket(
    gunicorn_server, media, page, s3, bucket
):
    server = gunicorn_server(ENCODE_WORKERS=2, STORAGE_URL=f"s3://{bucket}/web")
    sign_in(page, server)
    job_id = api_submit(server, [media["clip"]], 1)
    job_card = card(page, job_id)
    job_card.locator(".badge", has_text="Completed").wait_for(timeout=90_000)
    thumb = job_card.locator(".job-thumb img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    job_card.locator(".job-title").click()
    page.wait_for_url(f"{server.url}/jobs/{job_id}")
    video = page.locator(".variation video").first
    video.scroll_into_view_if_needed()
    page.wait_for_function("v => v.currentSrc !== ''", arg=video.element_handle())
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.readyState >= 2 && v.currentTime > 0.2", arg=video.element_handle(), timeout=20_000)
    with page.expect_download() as one:
        page.locator(".variation a[download]").first.click()
    assert Path(one.value.path()).read_bytes()[4:8] == b"ftyp"
    assert one.value.suggested_filename == api_job(server, job_id)["files"][0]["outputs"][0]["name"]
    with page.expect_download() as everything:
        page.click("#download-all")
    names = zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes())).namelist()
    assert len([n for n in names if n.endswith(".mp4")]) == 1
    assert any(k.startswith(f"web/jobs/{job_id}/") for k in s3.keys(bucket)), "the files are in the bucket"


def grainy_clip(path: Path) -> Path:
    """A 3 s clip of 12 MB (noise, losslessly coded): an upload that takes more than one PATCH."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:duration=3",
         "-vf", "noise=alls=100:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path


def test_resumable_uploads_go_on_after_a_cut_connection_and_in_a_page_opened_again(
    gunicorn_server, media, page, tmp_path
):
    server = gunicorn_server(ENCODE_WORKERS=1)
    relay = Relay(server.port)  # the browser's network, which the test cuts
    sign_in(page, SimpleNamespace(url=relay.url))
    grainy = grainy_clip(tmp_path / "grainy.mp4")
    total = media["clip"].stat().st_size + grainy.stat().st_size
    created = []
    page.on("request", lambda r: created.append(r.url) if r.method == "POST" and "/api/uploads" in r.url else None)

    # two files; the connection is cut in the middle of the second, and the upload goes on from there
    page.set_input_files("#videos", [str(media["clip"]), str(grainy)])
    page.fill("#variations", "1")
    page.evaluate("""() => {
        window.sentTexts = [];
        new MutationObserver(() => document.querySelectorAll('.chosen-sent')
            .forEach((line) => window.sentTexts.push(line.textContent)))
            .observe(document.getElementById('chosen-files'), { subtree: true, childList: true, characterData: true });
    }""")
    relay.rate, relay.sent = 8 * 1024 * 1024, 0  # (slow enough for a speed to show)
    cut = []

    def cut_once(route):
        """The grainy file's second PATCH (10 MB into its 12) fails as on a dropped connection, once."""
        if route.request.method == "PATCH" and route.request.headers.get("upload-offset", "0") != "0" and not cut:
            cut.append(route.request.headers["upload-offset"])
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/uploads/*", cut_once)
    page.click("#upload-submit")
    page.wait_for_selector("#upload-message.alert-success", timeout=60_000)
    page.unroute("**/api/uploads/*")
    assert cut == [str(CHUNK_BYTES)], "the connection was cut in the middle of the second file"
    said = page.evaluate("window.sentTexts")
    assert any(re.fullmatch(r"[\d.]+ [KM]B of 12 MB · [\d.]+ [KM]B/s", text) for text in said), said[-20:]
    assert len(created) == 2, "each file was created once and resumed, never begun again"
    assert relay.sent <= total + CHUNK_BYTES + 256 * 1024, (relay.sent, total)  # (256 KB: heads, polls)
    job_id = newest_job_id(page)
    card(page, job_id).locator(".badge", has_text="Completed").wait_for(timeout=90_000)

    # the tab closed in the middle and the page opened again: the same file picked again goes on where it stopped
    relay.rate, relay.sent = 2 * 1024 * 1024, 0
    page.set_input_files("#videos", [str(grainy)])
    page.click("#upload-submit")
    wait_for(lambda: relay.sent > 5 * 1024 * 1024, 30, "half of the upload")
    page.close()  # (without asking "leave the page?")
    relay.rate, relay.sent = None, 0
    again = page.context.new_page()
    again.goto(relay.url + "/")
    again.set_input_files("#videos", [str(grainy)])
    again.fill("#variations", "1")
    again.on("request", lambda r: created.append(r.url) if r.method == "POST" and "/api/uploads" in r.url else None)
    again.click("#upload-submit")
    again.wait_for_selector("#upload-message.alert-success", timeout=60_000)
    assert len(created) == 3, "the page opened again resumed the upload it had begun"
    assert relay.sent < grainy.stat().st_size - 4 * 1024 * 1024, relay.sent
    card(again, newest_job_id(again)).locator(".badge", has_text="Completed").wait_for(timeout=90_000)
    relay.close()
