"""The WSGI application, made from the environment's settings:
`gunicorn -c python:refresher.gunicorn_config refresher.wsgi:app`.

A setting, ffmpeg binary or DATA_DIR that cannot be used stops the process
with one line naming it (exit status 2), as every start command does.
"""

from __future__ import annotations

import sys

from .media.check import FFmpegUnusable, check_binary
from .media.ffmpeg import FFmpegNotFound, resolve_binary
from .settings import SettingsError, load_settings
from .startup import DataDirUnusable
from .webapp import create_app

try:
    settings = load_settings().for_web()
    check_binary(resolve_binary(settings.ffmpeg_binary))
    app = create_app(settings)
except (SettingsError, FFmpegNotFound, FFmpegUnusable, DataDirUnusable) as exc:
    sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
    sys.exit(2)
