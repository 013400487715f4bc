"""Names people gave their files, as the service shows them back: in the
API, the ZIP's folders and entries, and Content-Disposition. They never
decide a path on disk."""
from __future__ import annotations

import re
import unicodedata

from . import limits

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_IN_FILENAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


def display_name(filename: str | None) -> str:
    """The base name a person gave the file, without any path, control
    characters or surrounding space; 'video.mp4' when nothing usable is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = re.split(r"[\\/]", name)[-1]
    name = CONTROL_CHARACTERS.sub("", name).strip().strip(".").strip()
    name = " ".join(name.split())[:limits.MAX_FILE_NAME_LENGTH]
    return name or "video.mp4"


def safe_stem(name: str) -> str:
    """A file-name-safe stem for output names and ZIP folders (unicode letters kept)."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = _UNSAFE_IN_FILENAME.sub("_", stem).replace(" ", "_").strip("._-")
    return stem[:80] or "video"


# Control and format characters (Cc, Cf: e.g. a right-to-left override that
# makes "gpj.exe" read "exe.jpg"), lone surrogates, line and paragraph separators.
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def clean_job_name(raw) -> str | None:
    """A name given to a job, without surrounding blanks; None when it is not
    1–100 printable characters (the caller answers 400)."""
    if not isinstance(raw, str):
        return None
    name = unicodedata.normalize("NFC", raw).strip()
    if not limits.MIN_JOB_NAME_LENGTH <= len(name) <= limits.MAX_JOB_NAME_LENGTH:
        return None
    if any(unicodedata.category(c) in _UNPRINTABLE_CATEGORIES for c in name):
        return None
    return name


def name_from_files(names: list[str]) -> str:
    """A job's name when it was given none: its first source, and how many others."""
    if not names:
        return "Untitled job"
    if len(names) == 1:
        return names[0]
    return f"{names[0]} and {len(names) - 1} more"
