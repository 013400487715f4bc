"""Make the README's screenshots of the web form.

    python -m docs.screenshots [--out docs]

Starts a real gunicorn on a free port (see bench/_harness.py), makes a few
short ad-like clips with ffmpeg's lavfi sources, creates a completed, a
cancelled and a running job through the API, then photographs the pages with
the system's Chromium driven by Playwright (pip install -r requirements-dev.txt;
apt-get install chromium). The encodes of one source of the completed job fail
(the stand-in ffmpeg of tests/fakes/failing_ffmpeg.py), so that its page
offers to retry them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench._harness import FFMPEG, PASSWORD, Server, work_dir
from tests.support.media import make_clip

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

# name, size, seconds, gradient colours, caption
CLIPS = {
    "summer_sale_15s.mp4": ("640x360", 15, ("0xd946ef", "0x7c3aed"), "SUMMER SALE"),
    "new_collection_teaser.mov": ("360x640", 10, ("0x0ea5e9", "0x10b981"), "NEW COLLECTION"),
    "brand_story_30s.mp4": ("640x360", 30, ("0x1e1b4b", "0x6366f1"), "Made to last"),
    "black_friday_30s.mp4": ("1280x720", 30, ("0x111827", "0xf59e0b"), "BLACK FRIDAY"),
}


def make_ad(folder: Path, name: str) -> Path:
    size, seconds, (c0, c1), caption = CLIPS[name]
    video = f"gradients=size={size}:rate=30:duration={seconds}:c0={c0}:c1={c1}:speed=0.02"
    if FONT.exists():
        video += (
            f",drawtext=fontfile={FONT}:text='{caption}':fontcolor=white:fontsize=h/12:x=(w-text_w)/2:y=(h-text_h)/2"
        )
    return make_clip(folder / name, seconds=seconds, video=video, tone=330, preset="veryfast")


def sign_in(page, url: str) -> None:
    page.goto(url + "/login")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = work_dir("refresher-shots-")
    ads = {name: make_ad(work, name) for name in CLIPS}

    from playwright.sync_api import sync_playwright

    failing = work / "fail-teaser"
    failing.touch()
    failing_ffmpeg = {
        "FFMPEG_BINARY": ROOT / "tests" / "fakes" / "failing_ffmpeg.py",
        "REAL_FFMPEG": FFMPEG,
        "FAIL_SWITCH": failing,
        "FAIL_INPUT_SIZE": ads["new_collection_teaser.mov"].stat().st_size,
    }
    with Server(ENCODE_WORKERS=1, **failing_ffmpeg) as server, sync_playwright() as playwright:
        done = server.wait(
            server.submit(
                [ads["summer_sale_15s.mp4"], ads["new_collection_teaser.mov"]],
                3,
                seed="spring-campaign",
                name="Spring campaign",
            )
        )["jobId"]
        failing.unlink()
        stopped = server.submit([ads["brand_story_30s.mp4"]], 8, name="Brand story, director's cut")
        while server.job(stopped)["completedVariations"] < 3:
            time.sleep(0.2)
        server.session.post(f"{server.url}/api/jobs/{stopped}/cancel")
        running = server.submit([ads["black_friday_30s.mp4"]], 12)
        while server.job(running)["completedVariations"] < 2:
            time.sleep(0.2)

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])

        def shoot(page, name: str, selector: str | None = None) -> None:
            page.wait_for_timeout(500)  # let progress bars and images settle
            clip = None
            if selector:  # the element with a margin of page around it
                box = page.locator(selector).bounding_box()
                clip = {
                    "x": max(0, box["x"] - 20),
                    "y": max(0, box["y"] - 20),
                    "width": box["width"] + 40,
                    "height": box["height"] + 40,
                }
            page.screenshot(path=str(args.out / f"screenshot-{name}.png"), clip=clip, full_page=bool(clip))
            print("wrote", args.out / f"screenshot-{name}.png")

        light = browser.new_context(viewport={"width": 1200, "height": 900})
        page = light.new_page()
        page.set_viewport_size({"width": 1000, "height": 640})
        page.goto(server.url + "/login")
        shoot(page, "login")
        page.set_viewport_size({"width": 1200, "height": 900})
        sign_in(page, server.url)
        page.set_input_files(
            "#videos",
            [str(ads[n]) for n in ("summer_sale_15s.mp4", "new_collection_teaser.mov", "brand_story_30s.mp4")],
        )
        page.fill("#variations", "4")
        page.fill("#job-name", "Autumn campaign")
        page.fill("#seed", "autumn-campaign")
        shoot(page, "upload")
        page.locator(".job-card").nth(2).wait_for()
        shoot(page, "jobs", "section.jobs")
        page.goto(f"{server.url}/jobs/{done}")
        page.locator(".variation").nth(2).wait_for()
        page.locator("#retry-job").wait_for()
        page.set_viewport_size({"width": 1200, "height": 1180})
        shoot(page, "job")
        page.goto(f"{server.url}/jobs/{stopped}")
        page.locator("#resume-job").wait_for()
        shoot(page, "job-cancelled", "#job")

        dark = browser.new_context(viewport={"width": 1200, "height": 900}, color_scheme="dark")
        page = dark.new_page()
        sign_in(page, server.url)
        page.locator(".job-card").nth(2).wait_for()
        page.locator("#job-list").scroll_into_view_if_needed()
        shoot(page, "jobs-dark")

        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
        )
        page = phone.new_page()
        sign_in(page, server.url)
        page.goto(f"{server.url}/jobs/{running}")
        page.locator("#job-progress").wait_for()
        shoot(page, "phone")
        browser.close()
        server.session.post(f"{server.url}/api/jobs/{running}/cancel")


if __name__ == "__main__":
    main()
