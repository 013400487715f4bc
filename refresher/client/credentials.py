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
    # The service's address, not its API's: `…/api` and `…/api/` (what a
    # person copies from the API's routes) mean the same server.
    url = url.rstrip("/")
    return url[: -len("/api")] if url.lower().endswith("/api") else url


def token_file() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "video-refresher" / "token"


def saved_token() -> str | None:
    try:
        token = token_file().read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


class BadToken(ValueError):
    """The token given cannot be one (a space or a control character inside)."""


def find_token(option: str | None) -> str | None:
    """The token to send. Whitespace around it (the line break of a file read
    with `$(cat …)` or a copy from a terminal, a CR from Windows) is not part
    of it; whitespace or a control character inside it is a BadToken."""
    for source, value in (("--token", option), ("REFRESHER_TOKEN", os.environ.get("REFRESHER_TOKEN"))):
        if value and value.strip():
            token = value.strip()
            if not token.isprintable() or any(c.isspace() for c in token):
                raise BadToken(
                    f"the token in {source} has a space, line break or control character inside it; "
                    f"a token has none (check how it was copied)"
                )
            return token
    return saved_token()


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
