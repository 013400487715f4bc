#!/usr/bin/env python3
"""A stand-in ffmpeg for which one source is slow to read: a call whose input
is SLOW_INPUT_SIZE bytes long (a probe, the read of its packets, its
thumbnail) first writes its pid as a line to STARTED_FILE, then waits while
HOLD_FILE exists. Everything else, and such a call once the hold file is
gone, runs the real ffmpeg (in the same process, so a kill reaches it)."""

import itertools
import os
import sys
import time

args = sys.argv[1:]
inputs = [b.removeprefix("file:") for a, b in itertools.pairwise(args) if a == "-i"]
if any(os.path.isfile(path) and os.path.getsize(path) == int(os.environ["SLOW_INPUT_SIZE"]) for path in inputs):
    with open(os.environ["STARTED_FILE"], "a") as started:
        started.write(f"{os.getpid()}\n")
    while os.path.exists(os.environ["HOLD_FILE"]):
        time.sleep(0.02)
os.execv(os.environ["REAL_FFMPEG"], [os.environ["REAL_FFMPEG"], *args])
