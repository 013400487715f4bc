"""gunicorn settings, then its hooks:
`gunicorn -c python:refresher.gunicorn_config refresher.wsgi:app`
(`config/gunicorn.conf.py` is the same for a checkout).

The web worker is gunicorn's gthread with one change against slow clients
(refresher/gunicorn_worker.py). The master makes this host's control block
and starts exactly one supervisor (the encode workers and the cleanup
daemon) in `on_starting`, before any web worker forks; each web worker's app
is handed the control block in `post_worker_init`; `on_exit` stops the
supervisor.

What the hooks keep lives in this module, which Python imports once: a
reload (`kill -HUP` of the master) reads the config file again but finds the
same module, so the new web workers get the same control block and the
supervisor carries on. And whatever the master registers is inherited by
every web worker it forks: the stop at exit checks that it runs in the
master, so a web worker that exits (a timeout, `max_requests`, a crash)
leaves the supervisor alone.
"""

import atexit
import os
import sys

from . import startup
from .engine.control import ControlBlock, remove_abandoned
from .engine.handle import SupervisorHandle
from .media.check import FFmpegUnusable, check_binary
from .media.ffmpeg import FFmpegNotFound, resolve_binary
from .settings import SettingsError, load_settings

__all__ = [
    "bind",
    "workers",
    "worker_class",
    "threads",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "accesslog",
    "access_log_format",
    "errorlog",
    "loglevel",
    "control_socket_disable",
    "preload_app",
    "on_starting",
    "post_worker_init",
    "on_exit",
]

try:
    _settings = load_settings().for_web()
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
# A thread is given only to a request that has arrived (slow clients).
worker_class = "refresher.gunicorn_worker.RequestFirstWorker"
threads = 32
timeout = 60  # also: a thread's read or write that makes no progress this long gives up
graceful_timeout = 20  # Heroku sends SIGKILL 30 s after SIGTERM
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms pid=%(p)s'
errorlog = "-"
loglevel = _settings.log_level.lower()  # gunicorn's own lines follow LOG_LEVEL too
control_socket_disable = True  # no socket under ~/.gunicorn/
preload_app = False  # each worker makes its own app (and database pool) after the fork

_control = None
_supervisor = None
_master_pid = None


def on_starting(server):
    global _control, _supervisor, _master_pid
    _master_pid = os.getpid()
    # Once, here, before the workers start: DATA_DIR and the database checked,
    # the schema, a generated password printed by this process, uploads a
    # stopped server left removed. Nothing stays open for the workers to inherit.
    try:
        abandoned = startup.prepare(_settings)
    except startup.DataDirUnusable as exc:
        sys.stderr.write(f"Video Refresher cannot start: {exc}\n")
        sys.exit(2)
    if abandoned:
        server.log.info("removed %d upload(s) left unfinished by a server that stopped", len(abandoned))
    if _settings.encode_workers == 0:
        server.log.info(
            "no encode workers here (ENCODE_WORKERS or WEB_ENCODE_WORKERS is 0): this server only "
            "serves HTTP; worker processes encode"
        )
        return
    run_dir = _settings.data_dir / "run"
    remove_abandoned(run_dir)
    _control = ControlBlock.create(run_dir)
    _supervisor = SupervisorHandle(_settings, _control).start()
    _supervisor.watch(server.log)
    # If the master exits without on_exit (e.g. the port is taken), stop it anyway.
    atexit.register(on_exit, server)


def post_worker_init(worker):
    worker.wsgi.extensions["refresher"].control = _control


def on_exit(server):
    """In the master only (a forked web worker inherits the atexit entry), once."""
    global _supervisor, _control
    if os.getpid() != _master_pid:
        return
    if _supervisor is not None:
        _supervisor.stop()
        _supervisor = None
    if _control is not None:
        _control.remove()
        _control = None
