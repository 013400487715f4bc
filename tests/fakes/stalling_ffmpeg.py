#!/usr/bin/env python3
"""A stand-in ffmpeg whose encodes hang without progress (as on a stuck
filesystem): it ignores `q`, and dies only on a signal. Probes and thumbnails
run the real ffmpeg."""

import itertools
import os
import sys
import time

args = sys.argv[1:]
if not any(a == "-f" and b == "mp4" for a, b in itertools.pairwise(args)):
    os.execv(os.environ["REAL_FFMPEG"], [os.environ["REAL_FFMPEG"], *args])
sys.stderr.write("stalled: waiting for a disk that never answers\n")
sys.stderr.flush()
while True:
    time.sleep(60)
