"""The supervisor: one process per host that owns the encoding.

It claims queued jobs first in, first out, feeds their variations to a
multiprocessing pool (one task = one variation = one ffmpeg), turns each
task's outcome into the variation's and the job's state, rolls per-variation
progress up into the job's overall progress, and runs the cleanup daemon
(APScheduler) — so the scheduler exists once per host, never once per web
worker.

`SupervisorHandle` starts and stops it from gunicorn's master (`on_starting` /
`on_exit`) or embedded (`python app.py`, tests): one code path for both.
Its liveness is judged by the process sentinel and the heartbeat in the
cancel table, never by `exitcode` (gunicorn's arbiter reaps children it does
not know, so the exit status is lost).
"""
from __future__ import annotations

import fcntl
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sqlite3
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings

from .. import lifecycle, store
from ..media import ffmpeg
from . import variation as pool_work
from .cancel_table import CancelTable

log = logging.getLogger("refresher.supervisor")

TICK_SECONDS = 0.1               # how often the dispatcher looks at the store
PROGRESS_ROLLUP_SECONDS = 0.5    # how often job progress is recomputed
LOST_TASK_CHECK_SECONDS = 1.0
PICKUP_SECONDS = 10.0            # a task no idle pool worker took by then: the pool is stuck
MAX_FAILED_ATTEMPTS = 2          # an ffmpeg that fails is retried once
MAX_INTERRUPTIONS = 3            # restarts/shutdowns a variation may live through
RESTART_AFTER_CLEAN_EXIT_SECONDS = 5.0
SUPERVISOR_LOCK = "supervisor.lock"


@dataclass
class _InFlight:
    task: dict
    dispatched_at: float
    nudged: bool = False  # the pool was unstuck for it once


class Supervisor:
    """Runs inside the supervisor process; see `run_supervisor`."""

    def __init__(self, settings: Settings, table: CancelTable):
        self.settings = settings
        self.table = table
        self.data_dir = Path(settings.data_dir).resolve()
        self.binary = ffmpeg.resolve_binary(settings.ffmpeg_binary)
        self.results: queue.Queue = queue.Queue()
        self.in_flight: dict[str, _InFlight] = {}
        self.stopping = threading.Event()
        self.parent_pid = os.getppid()
        self.conn = None
        self.pool = None
        self.scheduler = None
        self._last_rollup = 0.0
        self._last_lost_check = 0.0

    # --- the main loop -----------------------------------------------------------
    def run(self) -> None:
        self.table.mark_stopped(clean=False)  # not ready yet; a crash from here on is unclean
        if not self.take_data_dir_lock():
            return
        # The pool first: workers forked while this process has the database open
        # would inherit SQLite's per-process lock and shared-memory bookkeeping.
        self.pool = multiprocessing.get_context("fork").Pool(
            self.settings.encode_workers,
            initializer=pool_work.init_worker,
            initargs=(str(self.settings.db_path), self.table._a, str(self.data_dir), self.binary,
                      self.settings.stall_seconds),
        )
        self.conn = store.connect(self.settings.db_path)
        store.migrate(self.conn)
        self.table.set_shutdown(False)
        self.recover()
        lifecycle.sweep_temporaries(self.conn, self.settings, min_age=lifecycle.ORPHAN_AGE_SECONDS)
        self.start_scheduler()
        self.table.beat(os.getpid())  # ready: recovered, swept, pool up
        log.info("supervisor %d running %d encode worker(s) with %s", os.getpid(),
                 self.settings.encode_workers, self.binary)
        try:
            while not self.stopping.is_set():
                self.table.beat(os.getpid())
                if os.getppid() != self.parent_pid:
                    log.warning("the server process is gone; the supervisor shuts down")
                    break
                try:
                    self.tick()
                    try:
                        outcome = self.results.get(timeout=TICK_SECONDS)
                    except queue.Empty:
                        continue
                    self.handle_outcome(outcome)
                except (sqlite3.Error, OSError) as exc:
                    # A full disk or a locked database must not take the supervisor
                    # down: say so, wait a little, and carry on with a fresh
                    # connection (one that hit an I/O error may stay unusable).
                    log.error("supervisor loop: %s", describe_error(exc))
                    self.stopping.wait(1.0)
                    if isinstance(exc, sqlite3.Error):
                        self.reconnect()
        finally:
            self.shutdown()

    def take_data_dir_lock(self) -> bool:
        """One supervisor per DATA_DIR, even when two servers are started on it
        by mistake: the second waits, serving nothing, until the lock is free."""
        self.lock_file = open(self.data_dir / SUPERVISOR_LOCK, "a+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or "another process"
            log.error("another supervisor (pid %s) already runs on %s; this server's supervisor "
                      "waits until it stops and takes over then", holder, self.data_dir)
            while not self.stopping.is_set():
                if os.getppid() != self.parent_pid:
                    return False
                self.table.beat(os.getpid(), standby=True)
                try:
                    fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.stopping.wait(1.0)
            else:
                return False
            log.warning("the other supervisor stopped; this one takes over %s", self.data_dir)
        self.lock_file.seek(0)
        self.lock_file.truncate()
        self.lock_file.write(str(os.getpid()))
        self.lock_file.flush()
        return True

    def tick(self) -> None:
        while True:
            try:
                self.handle_outcome(self.results.get_nowait())
            except queue.Empty:
                break
        self.propagate_cancels()
        now = time.monotonic()
        if now - self._last_lost_check >= LOST_TASK_CHECK_SECONDS:
            self._last_lost_check = now
            self.check_lost_tasks()
        self.dispatch()
        if now - self._last_rollup >= PROGRESS_ROLLUP_SECONDS:
            self._last_rollup = now
            for job in store.active_jobs(self.conn):
                store.update_job_progress(self.conn, job["id"])

    # --- dispatching ---------------------------------------------------------------
    def dispatch(self) -> None:
        free = self.settings.encode_workers - len(self.in_flight)
        while free > 0:
            candidates = store.next_queued_variations(self.conn, free, exclude=self.in_flight)
            if not candidates:
                job = store.oldest_queued_job(self.conn)
                if job is None:
                    return
                self.start_job(job)
                continue
            for task in candidates:
                if not store.dispatch_variation(self.conn, task["id"], time.time()):
                    continue
                task["source_path"] = str(self.data_dir / task["upload_path"])
                self.in_flight[task["id"]] = _InFlight(task=task, dispatched_at=time.monotonic())
                self.pool.apply_async(pool_work.encode_variation, (task,),
                                      callback=self.results.put,
                                      error_callback=lambda exc, vid=task["id"]: self.results.put(
                                          {"id": vid, "outcome": "failed", "error": f"worker error: {exc}"}))
                free -= 1

    def start_job(self, job: dict) -> None:
        """queued → processing, unless the disk cannot hold its outputs."""
        problem = lifecycle.make_room_for(self.conn, self.settings, job)
        if problem is not None:
            log.error("job %s cannot start: %s", job["id"], problem)
            store.fail_job(self.conn, job["id"], problem, time.time(), self.settings.job_ttl_seconds)
            self.delete_sources(job["id"])
        elif store.claim_job(self.conn, job["id"], time.time()):
            log.info("job %s started", job["id"])
        # else somebody cancelled it meanwhile

    # --- outcomes ---------------------------------------------------------------------
    def reconnect(self) -> None:
        """Close, then open: SQLite shares a file's lock and shared-memory state
        among a process's connections, so the old one goes first."""
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        try:
            self.conn = store.connect(self.settings.db_path)
        except sqlite3.Error as exc:  # the closed one stays: every use fails, and we try again
            log.error("cannot reopen the database: %s", exc)

    def handle_outcome(self, outcome: dict) -> None:
        variation_id = outcome["id"]
        flight = self.in_flight.pop(variation_id, None)
        if flight is None:
            return  # a task we already gave up on as lost
        try:
            self.record_outcome(outcome)
        except BaseException:
            # Not recorded (the database is locked, the disk full …): keep it,
            # or the variation would stay "processing" and its job never end.
            self.in_flight[variation_id] = flight
            self.results.put(outcome)
            raise

    def record_outcome(self, outcome: dict) -> None:
        variation_id = outcome["id"]
        now = time.time()
        kind = outcome["outcome"]
        row = store.get_variation(self.conn, variation_id)
        if row is None:
            return  # the job was deleted
        if row["status"] != "processing":
            pass  # recorded by an earlier try that failed later on: only settle
        elif kind == "cancelled":
            store.end_variation(self.conn, variation_id, "cancelled", now)
        elif kind == "interrupted":
            self.requeue_or_fail(row, "interrupted")
        elif kind == "failed" and self.stopping.is_set():
            self.requeue_or_fail(row, "interrupted")  # ffmpeg got the shutdown signal too
        elif kind == "failed":
            error = outcome.get("error")
            if row["failures"] + 1 < MAX_FAILED_ATTEMPTS:
                log.warning("variation %s failed, retrying: %s", variation_id, error)
                store.end_variation(self.conn, variation_id, "queued", now, error, failed=True)
            else:
                log.error("variation %s failed: %s", variation_id, error)
                store.end_variation(self.conn, variation_id, "failed", now, error, failed=True)
        self.settle(row["job_id"])

    def requeue_or_fail(self, row: dict, why: str) -> None:
        """An attempt that ended through no fault of the encode: try again, but
        not forever."""
        now = time.time()
        interruptions = row["attempts"] - row["failures"]
        if interruptions >= MAX_INTERRUPTIONS:
            store.end_variation(self.conn, row["id"], "failed", now,
                                f"the encode was {why} {interruptions} times (restarts or crashes); giving up")
        else:
            store.end_variation(self.conn, row["id"], "queued", now)

    def settle(self, job_id: str) -> None:
        store.update_job_progress(self.conn, job_id)
        status = store.settle_job(self.conn, job_id, time.time(), self.settings.job_ttl_seconds)
        if status is None:
            return
        job = store.get_job(self.conn, job_id)
        if job is not None:
            self.table.clear(job["seq"])
        self.delete_sources(job_id)
        log.info("job %s %s", job_id, status)

    def delete_sources(self, job_id: str) -> None:
        for f in store.get_job_files(self.conn, job_id):
            if f["upload_path"]:
                (self.data_dir / f["upload_path"]).unlink(missing_ok=True)
                store.set_source_upload_path(self.conn, f["id"], None)

    # --- cancels and lost work -------------------------------------------------------------
    def propagate_cancels(self) -> None:
        """The store is the truth: make sure every cancel it records is in the table,
        and settle cancelled jobs that have nothing running any more."""
        for job in store.cancel_requested_jobs(self.conn):
            self.table.request_cancel(job["seq"])
            if not any(f.task["job_id"] == job["id"] for f in self.in_flight.values()):
                self.settle(job["id"])

    def check_lost_tasks(self) -> None:
        """A pool worker killed from outside never reports back: find its task by
        the worker pid it recorded, and count it as a failed attempt."""
        waiting = []
        for variation_id, flight in list(self.in_flight.items()):
            row = store.get_variation(self.conn, variation_id)
            if row is None or row["status"] != "processing":
                continue
            pid = row["worker_pid"]
            if pid is None and not flight.nudged and time.monotonic() - flight.dispatched_at > PICKUP_SECONDS:
                waiting.append(flight)
            lost = (pid is not None and not _is_child(pid)) or (
                pid is None and time.monotonic() - flight.dispatched_at > 60)
            if lost:
                log.warning("the worker running variation %s died", variation_id)
                _kill_stale_ffmpeg(row, self.data_dir)
                pool_work.partial_path(self.data_dir / row["output_path"]).unlink(missing_ok=True)
                self.results.put({"id": variation_id, "outcome": "failed",
                                  "error": "the encoding process died unexpectedly"})
        if waiting:
            self.unstick_pool(waiting)

    def unstick_pool(self, waiting: list[_InFlight]) -> None:
        """Tasks are only dispatched to idle workers, so one waits for seconds only
        when the pool is stuck: an idle worker blocks in the task queue's read
        while holding its lock, and one killed there (OOM killer, a stray kill)
        takes the lock with it; every other worker then waits for it forever.
        Release the orphaned lock so the replacement workers can read again."""
        lock = getattr(getattr(self.pool, "_inqueue", None), "_rlock", None)
        if lock is None:
            return
        log.warning("%d task(s) waited %.0f s for an idle encode worker: a worker died holding "
                    "the task queue's lock; releasing it", len(waiting), PICKUP_SECONDS)
        try:
            lock.release()
        except ValueError:
            pass  # it was not held after all
        for flight in waiting:
            flight.nudged = True  # if it still waits, it is counted as lost at 60 s

    # --- start-up recovery ---------------------------------------------------------------
    def recover(self) -> None:
        """After a restart or crash: no ffmpeg from before keeps running, no partial
        output survives, finished variations are kept, and interrupted ones are
        queued again (processing jobs then resume from them)."""
        for row in store.running_variations(self.conn):
            _kill_stale_ffmpeg(row, self.data_dir)
            output = self.data_dir / row["output_path"]
            pool_work.partial_path(output).unlink(missing_ok=True)
            if output.exists():  # renamed into place just before the crash: it is complete
                store.complete_variation(self.conn, row["id"], output.stat().st_size, time.time())
            else:
                self.requeue_or_fail(row, "interrupted")
        for job in store.active_jobs(self.conn):
            self.settle(job["id"])

    # --- the cleanup daemon --------------------------------------------------------------
    def start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(daemon=True)
        self.scheduler.add_job(self.cleanup, "interval", seconds=self.settings.cleanup_interval_seconds,
                               id="cleanup", max_instances=1, coalesce=True)
        self.scheduler.start()

    def cleanup(self) -> None:
        running = set(self.in_flight.copy())  # dict.copy is atomic; the main thread changes in_flight
        lifecycle.run_cleanup(self.settings, running=running)

    # --- shutting down ---------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.pool is None:
            return  # never got the DATA_DIR lock: nothing was started
        self.table.set_shutdown(True)  # running ffmpeg stop gracefully; nothing new starts
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + 3 * ffmpeg.STOP_GRACE_SECONDS + 5
        while self.in_flight and time.monotonic() < deadline:
            try:
                self.handle_outcome(self.results.get(timeout=0.1))
            except queue.Empty:
                pass
            except (sqlite3.Error, OSError) as exc:  # kept for the next start's recovery
                log.error("recording an outcome at shutdown: %s", exc)
                time.sleep(0.2)
        if self.pool is not None:
            self.pool.close()
            joiner = threading.Thread(target=self.pool.join, daemon=True)
            joiner.start()
            joiner.join(timeout=5)
            if joiner.is_alive():
                # Bounded too: terminate() waits for the task queue's lock, which a
                # worker killed while idle may have taken with it. Whatever is left
                # dies with this process (PR_SET_PDEATHSIG).
                terminator = threading.Thread(target=self.pool.terminate, daemon=True)
                terminator.start()
                terminator.join(timeout=5)
        for variation_id in list(self.in_flight):
            row = store.get_variation(self.conn, variation_id)
            if row is not None and row["status"] == "processing":
                _kill_stale_ffmpeg(row, self.data_dir)
                pool_work.partial_path(self.data_dir / row["output_path"]).unlink(missing_ok=True)
                self.requeue_or_fail(row, "interrupted")
        self.table.mark_stopped(clean=True)
        if self.conn is not None:
            self.conn.close()
        log.info("supervisor %d stopped", os.getpid())


def describe_error(exc: BaseException) -> str:
    """The message, with SQLite's error name when it has one (a closed
    connection's ProgrammingError has none)."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _is_child(pid: int) -> bool:
    """Alive and ours (a pool worker is a child of this process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    state, ppid = fields[0], int(fields[1])
    return state not in ("Z", "X") and ppid == os.getpid()


def _kill_stale_ffmpeg(row: dict, data_dir: Path) -> None:
    """Kill a recorded ffmpeg, but only if that pid really is our ffmpeg writing
    this variation's partial file (pids are reused)."""
    pid = row.get("ffmpeg_pid")
    if not pid:
        return
    marker = str(pool_work.partial_path(data_dir / row["output_path"]))
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return
    if marker not in cmdline:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
            break
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _forget_parent_state() -> None:
    """A supervisor forked from gunicorn's master inherits its signal handlers
    and (when restarted later) its listening sockets: drop both."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                signal.SIGTTOU, signal.SIGWINCH, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def run_supervisor(settings: Settings, table: CancelTable) -> None:
    """Entry point of the supervisor process."""
    _forget_parent_state()
    # Log to our own stderr (gunicorn's, or the terminal's), whatever handlers
    # the parent process had installed before it forked us.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per cleanup pass
    supervisor = Supervisor(settings, table)

    def stop(signum, frame):
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervisor.run()
    finally:
        logging.shutdown()
        # Everything is stopped and recorded; skip multiprocessing's exit-time
        # pool finalizer, which can block forever on a queue lock left held by
        # a worker that was killed.
        os._exit(0)


class SupervisorHandle:
    """Starts, watches and stops the supervisor process from its parent."""

    def __init__(self, settings: Settings, table: CancelTable):
        self.settings = settings
        self.table = table
        self.process: multiprocessing.Process | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a stop never races a restart
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> "SupervisorHandle":
        ctx = multiprocessing.get_context("fork")
        self.process = ctx.Process(target=run_supervisor, args=(self.settings, self.table),
                                   name="refresher-supervisor", daemon=False)
        self.process.start()
        return self

    def watch(self, logger: logging.Logger | None = None, interval: float = 1.0) -> None:
        """Replace the supervisor if it dies (a crash, an OOM kill, kill -9),
        without touching the web server. Runs as a thread of the parent."""
        logger = logger or log

        def loop():
            while not self._stopping.is_set():
                process = self.process
                if process is None:
                    return
                died = multiprocessing.connection.wait([process.sentinel], timeout=interval)
                if not died or self._stopping.is_set():
                    continue
                self._reap()
                if self.table.stopped_cleanly():
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
                    self.restarts += 1
                    self.table.mark_stopped(clean=False)
                    self.start()

        self._watcher = threading.Thread(target=loop, name="supervisor-watch", daemon=True)
        self._watcher.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        if self.process is None:
            return False
        return not multiprocessing.connection.wait([self.process.sentinel], timeout=0)

    def wait_ready(self, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.table.supervisor_alive() and self.table.supervisor_pid() == self.pid:
                return True
            if not self.alive():
                return False
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, wait for the supervisor and its pool to be gone, SIGKILL if need be."""
        self._stopping.set()
        with self._lock:
            pass  # a restart under way has finished: self.process is the current one
        if self.process is None or not self.alive():
            return
        try:
            os.kill(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if multiprocessing.connection.wait([self.process.sentinel], timeout=timeout):
            self._reap()
            return
        log.error("supervisor %d did not stop in %ss; killing it", self.process.pid, timeout)
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        multiprocessing.connection.wait([self.process.sentinel], timeout=5)
        self._reap()

    def _reap(self) -> None:
        try:
            os.waitpid(self.process.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # gunicorn's arbiter reaped it already
        # keep multiprocessing from joining it again at interpreter exit
        multiprocessing.process._children.discard(self.process)
