"""WSGI entry point for a checkout (`gunicorn -c config/gunicorn.conf.py app:app`;
an installed package has `refresher.wsgi:app`).

`python app.py` runs the development server with the supervisor embedded:
the same supervisor, encode workers and cleanup daemon that gunicorn's
master starts.
"""

from __future__ import annotations

from refresher.engine.control import ControlBlock
from refresher.engine.handle import SupervisorHandle
from refresher.startup import prepare
from refresher.wsgi import app, settings


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
