#!/usr/bin/env python3
"""A stand-in ffmpeg whose encodes of one source fail while a switch file
exists: the encode's input is FAIL_INPUT_SIZE bytes long and FAIL_SWITCH is
present. Everything else (other sources, probes, thumbnails, and every encode
once the switch is removed) runs the real ffmpeg."""

import itertools
import os
import sys

args = sys.argv[1:]
encoding = any(a == "-f" and b == "mp4" for a, b in itertools.pairwise(args))
inputs = [b.removeprefix("file:") for a, b in itertools.pairwise(args) if a == "-i"]
if (
    encoding
    and os.path.exists(os.environ["FAIL_SWITCH"])
    and any(os.path.getsize(path) == int(os.environ["FAIL_INPUT_SIZE"]) for path in inputs)
):
    sys.stderr.write("Error while decoding stream #0:0: Invalid data found when processing input\n")
    sys.exit(1)
os.execv(os.environ["REAL_FFMPEG"], [os.environ["REAL_FFMPEG"], *args])
