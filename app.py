"""WSGI entry point (`app = create_app()`).

`python app.py` runs the development server with the supervisor embedded:
the same supervisor, pool and cleanup daemon that gunicorn's master starts.
"""
from __future__ import annotations

import sys

from config.settings import SettingsError, load_settings
from refresher import create_app

try:
    settings = load_settings()
except SettingsError as exc:
    sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
    sys.exit(2)

app = create_app(settings)


def main() -> None:
    from refresher.engine.cancel_table import CancelTable, install
    from refresher.engine.supervisor import SupervisorHandle

    table = install(CancelTable())
    supervisor = SupervisorHandle(settings, table).start()
    try:
        app.run(host="0.0.0.0", port=settings.port, threaded=True, use_reloader=False)
    finally:
        supervisor.stop()


if __name__ == "__main__":
    main()
