"""Why an encode failed, in one sentence a person can act on.

ffmpeg's stderr names decoders by heap address (`[h264 @ 0x55d0517b8880]`),
paths of the host and lines that mean nothing to a user; a variation's
`error` is a sentence made from it instead, and the raw tail goes to the log
only. The common failures have sentences of their own; any other ends in
ffmpeg's last meaningful line, its addresses and paths taken out.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

MAX_DETAIL = 160  # characters of ffmpeg's own line kept in the fallback sentence

# (pattern in ffmpeg's stderr, what it means), most specific first: an output
# that cannot be written also says "No such file or directory".
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"No space left on device|Disk quota exceeded", re.I), "the disk is full"),
    (re.compile(r"Cannot allocate memory|out of memory", re.I), "ffmpeg ran out of memory"),
    (
        re.compile(r"Error opening output|Could not write header|Error writing trailer|Error muxing|Permission denied"),
        "the output could not be written",
    ),
    (re.compile(r"Error opening input.*No such file or directory"), "the source file is missing"),
    (
        re.compile(
            r"moov atom not found|Invalid data found when processing input|error reading header|"
            r"Error splitting the input|Invalid NAL unit|error while decoding|corrupt|truncated",
            re.I,
        ),
        "the source's data is damaged",
    ),
)

# Lines that close every failure and say nothing of its cause.
_CLOSING = re.compile(
    r"^(Conversion failed!?|Exiting normally.*|Error opening (input|output) files?:.*|"
    r"Error opening (input|output) file .*\.|Terminating thread with return code.*|Nothing was written into output.*)$"
)
_ADDRESS = re.compile(r"\s*@\s*0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
_PATH = re.compile(r"(?<![\w#])(?:file:)?(?:/[^\s/:,'\"\]]+){2,}")
_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")  # "[h264] ", "[vist#0:0/h264] [dec:h264] "


def _at(reached: float | None) -> str:
    return f" at {reached:.1f} s of the video" if reached else ""


def clean_line(line: str) -> str:
    """ffmpeg's line without heap addresses or host paths (a path keeps its
    file name only)."""
    line = _ADDRESS.sub("", line)
    line = _PATH.sub(lambda m: m.group(0).rsplit("/", 1)[-1], line)
    return " ".join(line.split())


def last_meaningful_line(tail: Sequence[str]) -> str | None:
    for raw in reversed(tail):
        line = clean_line(raw)
        if line and not _CLOSING.match(_PREFIX.sub("", line)):
            return line[:MAX_DETAIL]
    return None


def describe(
    returncode: int | None, tail: Sequence[str], *, reached: float | None = None, stalled_after: float | None = None
) -> str:
    """The sentence for a failed encode: its exit status (negative: the
    signal that killed it), the last lines of its stderr, how far into the
    video it got (seconds of output), and whether it was stopped for making
    no progress (after that many seconds)."""
    if stalled_after is not None:
        return f"the encode made no progress for {stalled_after:g} s{_at(reached)} and was stopped"
    text = "\n".join(tail)
    for pattern, meaning in _KNOWN:
        if pattern.search(text):
            return f"the encode stopped{_at(reached)}: {meaning}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return f"ffmpeg was killed ({name}){_at(reached)}, most often because the machine ran short of memory"
        return f"ffmpeg crashed ({name}){_at(reached)}"
    said = last_meaningful_line(tail)
    sentence = f"the encode failed{_at(reached)} (ffmpeg exited with status {returncode})"
    return f"{sentence}: {said}" if said else sentence
