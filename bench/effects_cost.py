"""Cost and fidelity of the default effect chain against the reference chain.

For each source, --variations effect mixes are drawn as the service draws
them and encoded with the service's own command; the reference chain (rotate
+ eq, the pipeline the product replaced) is encoded from the same source with
the same binary, in the same run. Reported per output second of video:

* CPU seconds (user + system of the ffmpeg process);
* SSIM and PSNR against the source, as ffmpeg measures them (a variation with
  a speed effect is compared with the source played at the same speed).

    python -m bench.effects_cost [--seconds 10] [--variations 6]
Target: at most half the reference's CPU per output second, fidelity
no worse than the reference's.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
from pathlib import Path

from bench._harness import FFMPEG, make_clip, work_dir

from refresher.media import effects as fx
from refresher.media import ffmpeg

REFERENCE_VF = "rotate=0.005:fillcolor=black@0,eq=brightness=0.02:contrast=1.02:saturation=0.98"


def reference_command(source: Path, target: Path) -> list[str]:
    """The reference pipeline, as the product ran it before."""
    return [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-vf",
        REFERENCE_VF,
        "-r",
        "29.97",
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
        "-movflags",
        "+faststart",
        "-map_metadata",
        "-1",
        str(target),
    ]


REPEAT = 3  # CPU time of shared machines is noisy: each command runs this often, median kept


def cpu_seconds(cmd: list[str]) -> float:
    samples = []
    for _ in range(REPEAT):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(samples)


def fidelity(output: Path, source: Path, speed: float = 1.0) -> tuple[float, float]:
    """(SSIM, PSNR) of the output against the source at the same speed and rate."""
    graph = (
        f"[1:v]setpts=PTS/{speed},fps=30000/1001,format=yuv420p,split[r1][r2];"
        f"[0:v]format=yuv420p,split[o1][o2];[o1][r1]ssim;[o2][r2]psnr"
    )
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-i", str(output), "-i", str(source), "-filter_complex", graph, "-f", "null", "-"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    ssim = float(re.search(r"SSIM .* All:([\d.]+)", r.stderr).group(1))
    psnr = re.search(r"PSNR .* average:([\d.]+|inf)", r.stderr).group(1)
    return ssim, float(psnr)


def measure(source: Path, variations: int, work: Path) -> dict:
    info = ffmpeg.probe(FFMPEG, source)
    ref_out = work / f"{source.stem}-reference.mp4"
    ref_cpu = cpu_seconds(reference_command(source, ref_out))
    ref_ssim, ref_psnr = fidelity(ref_out, source)
    rows = []
    for index, effects in enumerate(fx.draw_job_effects("bench", 1, variations)[0], start=1):
        out = work / f"{source.stem}-var{index}.mp4"
        cmd = fx.encode_command(
            FFMPEG,
            source,
            out,
            effects,
            info.width,
            info.height,
            info.has_audio,
            info.audio_codec,
            duration=info.duration,
            video_frames=ffmpeg.count_video_frames(FFMPEG, source),
        )
        cpu = cpu_seconds(cmd)
        duration = ffmpeg.probe(FFMPEG, out).duration
        ssim, psnr = fidelity(out, source, effects.get("speed", 1.0))
        rows.append({"cpu": cpu / duration, "ssim": ssim, "psnr": psnr, "effects": effects})
    return {
        "ref_cpu": ref_cpu / ffmpeg.probe(FFMPEG, ref_out).duration,
        "ref_ssim": ref_ssim,
        "ref_psnr": ref_psnr,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--variations", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (median CPU kept)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    work = work_dir("refresher-bench-fx-")
    sources = [
        make_clip(work, "src-640x360.mp4", "640x360", args.seconds),
        make_clip(work, "src-1280x720.mp4", "1280x720", args.seconds),
    ]
    print("effect chain cost (CPU s per output s) and fidelity to the source (SSIM, PSNR dB)")
    for source in sources:
        m = measure(source, args.variations, work)
        cpu = statistics.mean(r["cpu"] for r in m["rows"])
        ssim = statistics.mean(r["ssim"] for r in m["rows"])
        psnr = statistics.mean(r["psnr"] for r in m["rows"])
        print(f"  {source.stem}")
        print(
            f"    baseline  reference chain      : cpu {m['ref_cpu']:.3f}   ssim {m['ref_ssim']:.4f}   "
            f"psnr {m['ref_psnr']:.2f}"
        )
        print(f"    service   default chain (mean) : cpu {cpu:.3f}   ssim {ssim:.4f}   psnr {psnr:.2f}")
        print(
            f"              default chain (worst): cpu {max(r['cpu'] for r in m['rows']):.3f}   "
            f"ssim {min(r['ssim'] for r in m['rows']):.4f}   psnr {min(r['psnr'] for r in m['rows']):.2f}"
        )
        print(f"    cpu ratio default/reference    : {cpu / m['ref_cpu']:.2f}×")


if __name__ == "__main__":
    main()
