"""What a person sees while the client works, always on stderr.

At a terminal (stdout and stderr both TTYs) transfers and jobs get tqdm
progress bars; otherwise — piped, redirected, in CI — they get a few plain
lines with no control characters, so logs stay readable. Results go to
stdout, never through here.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def job_line(job: dict) -> str:
    """One line about a job, e.g. 'processing 40% (4 of 10 variations done)'."""
    return (
        f"{job['status']} {job['overallProgress']}% "
        f"({job['completedVariations']} of {job['totalVariations']} variations done)"
    )


class Reporter:
    def __init__(self, bars: bool, stream: TextIO | None = None):
        self.bars = bars
        self.stream = stream if stream is not None else sys.stderr
        self._active: tqdm | None = None

    @classmethod
    def for_this_terminal(cls) -> Reporter:
        return cls(bars=sys.stdout.isatty() and sys.stderr.isatty())

    def note(self, text: str) -> None:
        """A line for the person, printed above any bar that is showing."""
        if self._active is not None:
            self._active.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def transfer(self, label: str, total: int) -> Transfer:
        """Progress of `total` bytes moving, e.g. label 'uploading 2 files'."""
        return Transfer(self, label, total)

    def job(self, job_id: str) -> JobProgress:
        return JobProgress(self, job_id)

    def _bar(self, **options) -> tqdm:
        self._active = tqdm(file=self.stream, dynamic_ncols=True, leave=True, **options)
        return self._active

    def _release(self, bar: tqdm | None) -> None:
        if bar is not None:
            bar.close()
        self._active = None


class Transfer:
    """Use as a context manager; call `reached(done)` with the bytes moved so far."""

    PLAIN_STEPS = 4  # plain mode prints a line at 25 %, 50 %, 75 %

    def __init__(self, reporter: Reporter, label: str, total: int):
        self.reporter = reporter
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self._step = 0
        self._started = time.monotonic()
        self._bar = None

    def __enter__(self) -> Transfer:
        if self.reporter.bars:
            self._bar = self.reporter._bar(
                total=self.total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=self.label
            )
        else:
            self.reporter.note(f"{self.label}: {human_size(self.total)}")
        return self

    def reached(self, done: int) -> None:
        done = min(done, self.total) if self.total else done
        if self._bar is not None:
            self._bar.update(done - self.done)
        elif self.total:
            step = done * self.PLAIN_STEPS // self.total
            if self._step < step < self.PLAIN_STEPS:
                self.reporter.note(
                    f"{self.label}: {step * 100 // self.PLAIN_STEPS}% ({human_size(done)} of {human_size(self.total)})"
                )
            self._step = max(self._step, step)
        self.done = done

    def __exit__(self, exc_type, exc, tb) -> None:
        self.reporter._release(self._bar)
        if exc_type is None and not self.reporter.bars:
            seconds = time.monotonic() - self._started
            self.reporter.note(f"{self.label}: done, {human_size(self.done)} in {seconds:.1f} s")


class JobProgress:
    """Use as a context manager; call `show(job)` with each fresh job status."""

    def __init__(self, reporter: Reporter, job_id: str):
        self.reporter = reporter
        self.job_id = job_id
        self._bar = None
        self._last_plain: tuple | None = None

    def __enter__(self) -> JobProgress:
        if self.reporter.bars:
            self._bar = self.reporter._bar(
                total=100, desc=f"job {self.job_id}", bar_format="{desc} {percentage:3.0f}%|{bar}|"
            )
        return self

    def show(self, job: dict) -> None:
        if self._bar is not None:
            self._bar.n = job["overallProgress"]
            self._bar.set_description_str(
                f"job {self.job_id} {job['status']}, {job['completedVariations']}/{job['totalVariations']} variations",
                refresh=False,
            )
            self._bar.refresh()
            return
        # Plain lines: on every change of status and every 10 % step.
        key = (job["status"], job["overallProgress"] // 10)
        if key != self._last_plain:
            self._last_plain = key
            self.reporter.note(f"job {self.job_id}: {job_line(job)}")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.reporter._release(self._bar)
