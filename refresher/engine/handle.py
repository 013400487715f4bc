"""The supervisor seen from the process that starts it: gunicorn's master
(`on_starting`), or `python app.py` and the tests, which embed it.

`SupervisorHandle` starts the supervisor as a fresh interpreter (`python -m
refresher.engine`, see `supervisor.py` for what runs there) with the control
block's path, replaces it if it dies, and stops it. Its liveness is judged by
a pidfd and by the heartbeat in the control block, never by an exit status:
gunicorn's arbiter reaps children it does not know.

This module runs in the server's process, so it imports none of the
supervisor's libraries (the store, the scheduler, storage).
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import site
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..settings import Settings
from .control import ControlBlock

log = logging.getLogger("refresher.supervisor")

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the refresher package
RESTART_AFTER_CLEAN_EXIT_SECONDS = 5.0


def _child_environment() -> dict[str, str]:
    """The supervisor imports this package from wherever this process did,
    whatever its working directory: a checkout run from elsewhere is put on
    PYTHONPATH; an installed package is found as it is."""
    env = dict(os.environ)
    if str(PACKAGE_ROOT) not in map(str, (Path(p).resolve() for p in site.getsitepackages())):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


class SupervisorHandle:
    """Starts, watches and stops the supervisor process from its parent."""

    def __init__(self, settings: Settings, control: ControlBlock):
        self.settings = settings
        self.control = control
        self.process: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a stop never races a restart
        self._watcher: threading.Thread | None = None

    def start(self) -> SupervisorHandle:
        # A fresh interpreter: it inherits no sockets, signal handlers, threads,
        # database connections or multiprocessing bookkeeping of the server
        # that starts it (a forked child would, and gunicorn's workers would
        # then try to join it). The settings go in on stdin, never on the
        # command line, where every user of the machine could read them.
        # It asks for SIGTERM when this process dies (`lifeline`), so a server
        # killed with -9 still has its supervisor shut down cleanly. (The
        # kernel sends it when the thread that started it ends: the server's
        # main thread, or the watcher below; both live as long as the server.)
        self.process = process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "refresher.engine",
                "--control",
                str(self.control.path),
                "--parent",
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            env=_child_environment(),
            close_fds=True,
        )
        assert process.stdin is not None  # stdin=PIPE
        process.stdin.write(self.settings.to_json().encode())
        process.stdin.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd = os.pidfd_open(process.pid)
        return self

    def _ended(self, timeout: float) -> bool:
        """Whether the supervisor process started last has ended, waiting up
        to `timeout` seconds for it to."""
        assert self._pidfd is not None, "start() opens the pidfd with the process"
        return bool(multiprocessing.connection.wait([self._pidfd], timeout=timeout))

    def watch(self, logger: logging.Logger | None = None, interval: float = 1.0) -> None:
        """Replace the supervisor if it dies (a crash, an OOM kill, kill -9),
        without touching the web server. Runs as a thread of the parent."""
        logger = logger or log

        def loop():
            while not self._stopping.is_set():
                process = self.process
                if process is None:
                    return
                died = self._ended(interval)
                if not died or self._stopping.is_set():
                    continue
                self._reap()
                if self.control.stopped_cleanly():
                    # It was told to stop (a platform shutdown signals every
                    # process): give our own shutdown a moment to catch up.
                    if self._stopping.wait(RESTART_AFTER_CLEAN_EXIT_SECONDS):
                        return
                    logger.warning("the supervisor (pid %s) stopped; starting a new one", process.pid)
                else:
                    logger.error("the supervisor (pid %s) died; starting a new one", process.pid)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self.control.mark_stopped(clean=False)
                    self.start()

        self._watcher = threading.Thread(target=loop, name="supervisor-watch", daemon=True)
        self._watcher.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        if self.process is None:
            return False
        return not self._ended(0)

    def wait_ready(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.control.supervisor_alive() and self.control.supervisor_pid() == self.pid:
                return True
            if not self.alive():
                return False
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, wait for the supervisor and its workers to be gone, SIGKILL if need be."""
        self._stopping.set()
        with self._lock:
            pass  # a restart under way has finished: self.process is the current one
        if self.process is None or not self.alive():
            return
        try:
            os.kill(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self._ended(timeout):
            self._reap()
            return
        log.error("supervisor %d did not stop in %ss; killing it", self.process.pid, timeout)
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._ended(5)
        self._reap()

    def _reap(self) -> None:
        # gunicorn's arbiter may have reaped it already: Popen copes with that
        if self.process is not None:
            self.process.poll()
