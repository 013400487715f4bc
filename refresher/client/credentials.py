"""Where the client finds the server and the token.

The server URL comes from `--url`, else `REFRESHER_URL`, else
http://localhost:8000. The token comes from `--token`, else `REFRESHER_TOKEN`,
else the file that `login --save` writes: `$XDG_CONFIG_HOME/video-refresher/token`
(by default `~/.config/video-refresher/token`), readable by its owner only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://localhost:8000"


class BadURL(ValueError):
    """The server's address is not an http(s) URL."""


def server_url(option: str | None) -> str:
    """The server's base URL; `127.0.0.1:8000` (no scheme) means http://.
    BadURL when it cannot be an address of the service."""
    url = (option or os.environ.get("REFRESHER_URL") or DEFAULT_URL).strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise BadURL(f"{url!r} is not a server address: give an http:// or https:// URL, e.g. --url {DEFAULT_URL}")
    return url.rstrip("/")


def token_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "video-refresher" / "token"


def saved_token() -> str | None:
    try:
        token = token_file().read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


def find_token(option: str | None) -> str | None:
    return option or os.environ.get("REFRESHER_TOKEN") or saved_token()


def save_token(token: str) -> Path:
    """Write the token with mode 0600 (its folder 0700), replacing any older one
    atomically so a reader never sees half a token."""
    path = token_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".token.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return path


def forget_token(token: str) -> Path | None:
    """Delete the saved token if it is this one; the file's path if it was."""
    if saved_token() != token:
        return None
    path = token_file()
    path.unlink(missing_ok=True)
    return path
