"""Names people gave their files and tokens, as the service shows them back:
in the API, the ZIP's folders and entries, `manifest.json` and
Content-Disposition. They never decide a path on disk.

Two rules hold for every name shown or stored:

* nothing invisible: no control or format characters (a bidi override such as
  U+202E makes `invoice\\u202egpj.mp4` read as `invoice4pm.jpg`), no line or
  paragraph separators, surrogates, private-use or unassigned code points;
* a name that becomes a path in the ZIP extracts everywhere: none of the
  characters Windows refuses, no trailing dot or space, no device name such as
  CON or COM1, a length every file system takes.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from . import contract

# Unicode general categories that draw nothing, or reorder and break what is
# around them: controls, format characters (bidi controls, zero-width
# characters, BOM), surrogates, private use, unassigned; line and paragraph
# separators.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

_UNSAFE_IN_FILENAME = re.compile(r"[^\w.\- ]+", re.UNICODE)
_REFUSED_BY_WINDOWS = re.compile(r'[<>:"/\\|?*]')
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789¹²³"}
)

# A ZIP folder: short enough that folder/entry stays well under Windows'
# 260-character path limit where it is extracted; bytes for file systems that
# count UTF-8 bytes (255 on ext4 and APFS).
MAX_FOLDER_CHARS = 60
MAX_FOLDER_BYTES = 150
MAX_STEM_CHARS = 80
MAX_STEM_BYTES = 180


def is_invisible(character: str) -> bool:
    return unicodedata.category(character) in INVISIBLE_CATEGORIES


def has_invisible(text: str) -> bool:
    return any(is_invisible(c) for c in text)


def strip_invisible(text: str) -> str:
    return "".join(c for c in text if not is_invisible(c))


def visible(text: str) -> str:
    """`text` with every run of white space (line breaks included) as one
    space and every invisible character removed."""
    return " ".join(strip_invisible(" ".join(text.split())).split())


def display_name(filename: str | None) -> str:
    """The base name a person gave the file, without any path, invisible
    characters or surrounding space; 'video.mp4' when nothing usable is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = re.split(r"[\\/]", name)[-1]
    name = visible(name).strip(" .")
    name = name[: contract.MAX_FILE_NAME_LENGTH].rstrip(" ")
    return name or "video.mp4"


def safe_stem(name: str) -> str:
    """A file-name-safe stem for output names (unicode letters kept)."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = _UNSAFE_IN_FILENAME.sub("_", stem).replace(" ", "_").strip("._-")
    stem = _fit(stem, MAX_STEM_CHARS, MAX_STEM_BYTES).strip("._-") or "video"
    return "_" + stem if _is_device_name(stem) else stem


def zip_folder_name(name: str, suffix: str = "") -> str:
    """The ZIP folder of the source named `name` (its name without the
    extension), with `suffix` (such as " (2)") kept whole within the length."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = _REFUSED_BY_WINDOWS.sub("_", visible(unicodedata.normalize("NFC", stem)))
    stem = _fit(stem, MAX_FOLDER_CHARS - len(suffix), MAX_FOLDER_BYTES - len(suffix.encode()))
    # Windows drops trailing dots and spaces; a leading dot hides a folder elsewhere.
    folder = (stem.strip(" .") or "video") + suffix
    return "_" + folder if _is_device_name(folder) else folder


def same_on_disk(name: str) -> str:
    """A key equal for names that Windows or macOS would take for the same
    file: case and Unicode normalization ignored."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def _is_device_name(name: str) -> bool:
    """Windows opens a device for CON, "con.txt" or "NUL .tar" alike."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES


def _fit(text: str, max_chars: int, max_bytes: int) -> str:
    """`text` cut to at most `max_chars` characters and `max_bytes` UTF-8 bytes."""
    text = text[:max_chars]
    while len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        text = text[:-1]
    return text


def clean_job_name(raw) -> str | None:
    """A name given to a job, without surrounding blanks; None when it is not
    1–100 printable characters (the caller answers 400)."""
    if not isinstance(raw, str):
        return None
    name = unicodedata.normalize("NFC", raw).strip()
    if not contract.MIN_JOB_NAME_LENGTH <= len(name) <= contract.MAX_JOB_NAME_LENGTH:
        return None
    if has_invisible(name):
        return None
    return name


def name_from_files(names: list[str]) -> str:
    """A job's name when it was given none: its first source, and how many others."""
    if not names:
        return "Untitled job"
    if len(names) == 1:
        return names[0]
    return f"{names[0]} and {len(names) - 1} more"


def content_disposition(name: str | None, kind: str = "attachment", fallback: str = "download") -> str:
    """A Content-Disposition header that names `name`: an ASCII file name for
    every client, and the name itself (RFC 6266 `filename*`) for those that
    read it. Where nothing legible is left in ASCII (a name all in another
    script), `fallback` (with the name's extension) stands in."""
    if not name:
        return kind
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = "".join(ch for ch in ascii_name if ch.isprintable() and ch not in '"\\')
    stem, dot, extension = ascii_name.rpartition(".")
    if not (stem if dot else extension).strip("._- "):
        ascii_name = fallback + (f".{extension}" if dot and extension else "")
    header = f'{kind}; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header
