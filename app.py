"""WSGI entry point (`app = create_app()`).

`python app.py` runs the development server with the supervisor embedded:
the same supervisor, encode workers and cleanup daemon that gunicorn's
master starts.
"""
from __future__ import annotations

import sys

from config.settings import SettingsError, load_settings
from refresher.engine.control import ControlBlock
from refresher.engine.supervisor import SupervisorHandle
from refresher.webapp import create_app
from refresher.media.check import FFmpegUnusable, check_binary
from refresher.media.ffmpeg import FFmpegNotFound, resolve_binary
from refresher.startup import DataDirUnusable, prepare

try:
    settings = load_settings().for_web()
    check_binary(resolve_binary(settings.ffmpeg_binary))
    app = create_app(settings)
except (SettingsError, FFmpegNotFound, FFmpegUnusable, DataDirUnusable) as exc:
    sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
    sys.exit(2)


def main() -> None:
    prepare(settings)  # as gunicorn's master does: uploads a stopped server left are removed
    if settings.encode_workers == 0:  # HTTP only: worker processes encode
        app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False)
        return
    control = ControlBlock.create(settings.data_dir / "run")
    app.extensions["refresher"].control = control
    supervisor = SupervisorHandle(settings, control).start()
    try:
        app.run(host=settings.host, port=settings.port, threaded=True, use_reloader=False)
    finally:
        supervisor.stop()
        control.remove()


if __name__ == "__main__":
    main()
