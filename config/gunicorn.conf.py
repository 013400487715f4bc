"""gunicorn settings, then its hooks.

The master starts exactly one supervisor (the encoding pool and the cleanup
daemon) in `on_starting`, before any web worker forks, together with the
shared-memory cancel table that every worker inherits; `on_exit` stops it.
"""
import atexit
import multiprocessing.process
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.settings import SettingsError, load_settings  # noqa: E402
from refresher.media.check import FFmpegUnusable, check_binary  # noqa: E402
from refresher.media.ffmpeg import FFmpegNotFound, resolve_binary  # noqa: E402

try:
    _settings = load_settings()
    # Here, in the master, before any worker forks: they inherit the result.
    check_binary(resolve_binary(_settings.ffmpeg_binary))
except (SettingsError, FFmpegNotFound, FFmpegUnusable) as _exc:
    sys.stderr.write(f"Video Refresher cannot start: {_exc}\n")
    sys.exit(2)

# HOST (default 0.0.0.0, every interface, as platforms that route to $PORT
# need); HOST=127.0.0.1 keeps the service to this machine.
bind = _settings.bind
workers = _settings.web_concurrency
# Threads keep status polling fast while uploads, downloads and SSE streams
# are open; the heartbeat runs on its own thread, so long uploads are fine.
worker_class = "gthread"
threads = 32
timeout = 60
graceful_timeout = 20          # Heroku sends SIGKILL 30 s after SIGTERM
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms pid=%(p)s'
errorlog = "-"
control_socket_disable = True  # no socket under ~/.gunicorn/
preload_app = False            # the app must not load before on_starting

_supervisor = None


def on_starting(server):
    global _supervisor
    from refresher.auth import load_secrets
    from refresher.engine.cancel_table import CancelTable, install
    from refresher.engine.supervisor import SupervisorHandle

    _settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_secrets(_settings)  # generate once, here, before workers could race for it
    table = install(CancelTable())
    _supervisor = SupervisorHandle(_settings, table).start()
    _supervisor.watch(server.log)
    # If the master exits without on_exit (e.g. the port is taken), stop it anyway.
    atexit.register(_supervisor.stop)


def post_fork(server, worker):
    # The worker inherited the master's multiprocessing child list; without this
    # it would try to join (or terminate) the supervisor when it exits.
    multiprocessing.process._children.clear()


def on_exit(server):
    if _supervisor is not None:
        _supervisor.stop()
