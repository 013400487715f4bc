#!/usr/bin/env python3
"""A stand-in ffmpeg for the stop-escalation test: encodes never finish and
ignore both `q` and SIGTERM, so only SIGKILL ends them. It logs when each
arrives. Every other call (probe, thumbnail) runs the real ffmpeg."""

import itertools
import os
import signal
import sys
import threading
import time

args = sys.argv[1:]
encoding = any(a == "-f" and b == "mp4" for a, b in itertools.pairwise(args))
if not encoding:
    os.execv(os.environ["REAL_FFMPEG"], [os.environ["REAL_FFMPEG"], *args])

# Its notes are the test's clock, so it leaves the idle priority every encode
# is started at (a root may): on a busy machine an idle-priority process
# runs late, and its note of `q` came 0.36 s after the cancel that sent it.
try:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
except OSError:
    pass
log = open(os.environ["STUBBORN_LOG"], "a", buffering=1)


def note(what):
    log.write(f"{what} {os.getpid()} {time.time():.3f}\n")


def ignore_sigterm(signum, frame):
    note("SIGTERM")


def read_stdin():
    while True:
        data = os.read(0, 1)
        if not data:
            return
        if data == b"q":
            note("q")


signal.signal(signal.SIGTERM, ignore_sigterm)
threading.Thread(target=read_stdin, daemon=True).start()
note("start")
micros = 0
while True:
    micros += 100_000
    sys.stdout.write(f"out_time_us={micros}\nprogress=continue\n")
    sys.stdout.flush()
    time.sleep(0.1)
