"""The supervisor: one process per host that owns the encoding.

It starts ENCODE_WORKERS encode workers itself (`encoder.py`), each with a
pipe of its own, and waits on those pipes and on the workers' process
sentinels together: a task goes only to an idle worker, every message comes
back on the worker's own pipe, and a worker that dies names exactly the task
it lost. It claims variations from the store fairly between jobs, turns what
workers report into the store's state (through `rules`), mirrors accepted
cancels into the control block, and runs the cleanup daemon (APScheduler) —
so the scheduler exists once per host, never once per web worker.

This is the supervisor process's own code. It runs as `python -m
refresher.engine` (`main`), started and watched by the server through
`handle.SupervisorHandle`, or as the worker process type (`python -m
refresher.worker`, `run_supervisor`).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from apscheduler.schedulers.background import BackgroundScheduler

from ..settings import Settings

from .. import lifecycle
from ..media import ffmpeg
from ..rules import FINAL
from ..storage import StorageError, open_storage
from ..store import Error as StoreError
from ..store import CancelListener, JobNotStarted, Store, new_id
from . import lifeline
from .control import ControlBlock, drain
from .messages import Outcome, Task, task_of
from .encoder import run_encoder

if TYPE_CHECKING:
    from multiprocessing.connection import _ConnectionBase
    from multiprocessing.process import BaseProcess

    from ..store import ChangeWatch

    # what multiprocessing.connection.wait waits on: a pipe's end, a socket, a process sentinel
    _Waitable: TypeAlias = _ConnectionBase | socket.socket | int

log = logging.getLogger("refresher.supervisor")

TICK_SECONDS = 0.1  # the longest a new job or a cancel waits for the loop
PROGRESS_FLUSH_SECONDS = 0.5  # progress is written at most this often
HEARTBEAT_SECONDS = 1.0  # this host's heartbeat in the store
RECLAIM_CHECK_SECONDS = 5.0  # how often silent hosts are looked for
POSTGRES_CANCEL_POLL_SECONDS = 1.0  # the fallback to the cancel listener
QUIET_LOOK_SECONDS = 1.0  # SQLite: with the database unchanged, work and cancels are looked for this often
LISTEN_SECONDS = 1.0  # the cancel listener looks up from its connection this often
LISTEN_PING_SECONDS = 5.0  # … and checks that the connection still works this often
LISTEN_RETRY_SECONDS = 1.0  # a lost listening connection is made again after this pause
SHUTDOWN_SECONDS = 3 * ffmpeg.STOP_GRACE_SECONDS + 5  # > the whole q → TERM → KILL ladder
SUPERVISOR_LOCK = "supervisor.lock"
LOST_WORKER = "the encoding process died unexpectedly"


class HostIdInUse(Exception):
    """Another live process runs under this HOST_ID. The message says so."""

    def __init__(self, host: str, holder: dict, here: bool):
        where = "on this machine" if here else "on another machine"
        age = max(0.0, time.time() - holder["heartbeat_at"])
        super().__init__(
            f"HOST_ID {host} is in use by a live process (pid {holder['pid']} {where}, "
            f"heartbeat {age:.1f} s ago); give every worker process its own HOST_ID"
        )


@dataclass
class _Worker:
    process: BaseProcess
    pipe: multiprocessing.connection.Connection
    task: Task | None = None


@dataclass
class _Outcome:
    """What a worker reported, kept until the store has taken it."""

    task: Task
    result: Outcome


class Supervisor:
    """Runs inside the supervisor process; see `run_supervisor`."""

    def __init__(self, settings: Settings, control: ControlBlock, parent_pid: int | None = None):
        self.settings = settings
        self.control = control
        self.data_dir = Path(settings.data_dir).resolve()
        self.binary = ffmpeg.resolve_binary(settings.ffmpeg_binary)
        self.host = settings.host_id
        self.storage = open_storage(*self.storage_spec)
        self.instance = new_id()  # this run, wherever it runs: who holds the host id
        self.machine = _machine()
        self.ttl = settings.job_ttl_seconds
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.unrecorded: list[_Outcome] = []
        self.progress: dict[str, float] = {}
        self.stopping = threading.Event()
        self.stopped_by: str | None = None  # the signal that told it to stop, if one did
        self.parent_pid = os.getppid() if parent_pid is None else parent_pid  # it stops when that one is gone
        self._store: Store | None = None  # opened by `run`
        self.scheduler: BackgroundScheduler | None = None
        self._last_flush = 0.0
        self._last_heartbeat = 0.0
        self._last_reclaim = 0.0
        self._last_cancel_poll = 0.0
        self._polled_tasks: set[str] = set()
        self.changes: ChangeWatch | None = None  # the store's, once the store is open
        self.wake: socket.socket | None = None  # the socket web workers wake this loop through
        self._may_have_work = True  # no claim has come back empty since the database last changed
        self._unrolled = True  # the database changed since jobs' progress was last rolled up
        self._last_empty_claim = 0.0

    @property
    def storage_spec(self) -> tuple:
        return (self.data_dir, self.settings.storage_url, self.settings.host_id)

    @property
    def store(self) -> Store:
        """The store, open from the start of `run` on."""
        assert self._store is not None, "the store is opened by run()"
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    # --- the main loop -----------------------------------------------------------
    def run(self) -> None:
        self.control.mark_stopped(clean=False)  # not ready yet; a crash from here on is unclean
        # SQLite: one supervisor per DATA_DIR. PostgreSQL: the hosts share the
        # database and find each other there (heartbeats, row locks).
        if not self.settings.uses_postgres and not self.take_data_dir_lock():
            return
        self.store = Store(self.settings.database)
        self.store.migrate()
        self.changes = self.store.watch_changes()
        if not self.take_host_id():
            return
        self.control.set_shutdown(False)
        self.recover()
        self.storage.release_all()  # this host's scratch: nothing of it runs any more
        lifecycle.sweep_temporaries(
            self.store,
            self.settings,
            running=self.running_anywhere(),
            min_age=lifecycle.ORPHAN_AGE_SECONDS,
            storage=self.storage,
        )
        self.workers = [self.start_worker(i) for i in range(self.settings.encode_workers)]
        self.open_wake_socket()
        self.start_scheduler()
        self.start_cancel_listener()
        self.control.beat(os.getpid())  # ready: recovered, swept, workers up
        log.info(
            "supervisor %d running %d encode worker(s) with %s", os.getpid(), self.settings.encode_workers, self.binary
        )
        try:
            while not self.stopping.is_set():
                self.control.beat(os.getpid())
                if os.getppid() != self.parent_pid:
                    log.warning("the server process is gone; the supervisor shuts down")
                    break
                try:
                    self.tick()
                except (StoreError, StorageError, OSError) as exc:
                    # A full disk, a locked database or object storage out of
                    # reach must not take the supervisor down: say so, wait a
                    # little, carry on.
                    log.error("supervisor loop: %s", exc)
                    self.stopping.wait(1.0)
        finally:
            self.shutdown()

    def tick(self) -> None:
        self.listen(TICK_SECONDS)
        self.record_outcomes()
        # Most turns of the loop change nothing in the database (a progress
        # message woke it, or nothing at all): then the claim and the cancel
        # poll, whose answers depend on the database alone, need not ask it.
        assert self.changes is not None, "run() watches the store before the loop starts"
        changed = self.changes.changed()
        if changed:
            self._may_have_work = self._unrolled = True
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            if not self.store.heartbeat(self.host, self.instance, os.getpid(), time.time()):
                log.error(
                    "HOST_ID %s was taken over by another process, which presumed this one dead; this supervisor stops",
                    self.host,
                )
                self.stopping.set()
        if now - self._last_reclaim >= RECLAIM_CHECK_SECONDS:
            self._last_reclaim = now
            self.reclaim_from_silent_hosts()
            self.release_finished_scratch()
        self.poll_cancels(now, changed)
        self.dispatch(now)
        if time.monotonic() - self._last_flush >= PROGRESS_FLUSH_SECONDS and (self.progress or self._unrolled):
            self._last_flush = time.monotonic()
            progress, self.progress = self.progress, {}
            self.store.record_progress(progress)
            self._unrolled = False
            self.store.roll_up_progress()

    # --- encode workers ----------------------------------------------------------------
    def start_worker(self, number: int) -> _Worker:
        ours, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=run_encoder,
            name=f"refresher-encoder-{number}",
            daemon=True,
            args=(
                theirs,
                os.getpid(),
                str(self.control.path),
                self.storage_spec,
                self.binary,
                self.settings.stall_seconds,
            ),
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def open_wake_socket(self) -> None:
        try:
            self.wake = self.control.open_wake_socket()
        except OSError as exc:  # then new work waits for the next turn of the loop, as it would anyway
            log.warning("no wake-up socket (%s); new work is looked for every %.1f s", exc, TICK_SECONDS)

    def listen(self, timeout: float) -> None:
        """Wait for messages, deaths and wake-ups, and handle what came."""
        waitables: dict[_Waitable, _Worker] = {}
        for worker in self.workers:
            waitables[worker.pipe] = worker
            waitables[worker.process.sentinel] = worker
        wake = [] if self.wake is None else [self.wake]
        for ready in multiprocessing.connection.wait([*waitables, *wake], timeout=timeout):
            if isinstance(ready, socket.socket):  # the wake socket
                drain(ready)  # the loop's turn that follows does the rest
                continue
            worker = waitables[ready]
            if ready is worker.pipe:
                self.receive(worker)
            elif not worker.process.is_alive():
                self.worker_died(worker)

    def receive(self, worker: _Worker) -> None:
        # (its sentinel may have been handled first in this round: pipe closed)
        while not worker.pipe.closed and worker.pipe.poll():
            try:
                kind, variation_id, payload = worker.pipe.recv()
            except (EOFError, OSError):
                return  # it died mid-message; its sentinel tells the rest
            if kind == "progress":
                self.progress[variation_id] = payload
            elif kind == "started":
                self.store.record_start(variation_id, payload["workerPid"], payload["ffmpegPid"], time.time())
            elif kind == "done" and worker.task is not None:
                self.unrecorded.append(_Outcome(worker.task, payload))
                worker.task = None

    def worker_died(self, worker: _Worker) -> None:
        """Its ffmpeg died with it (PR_SET_PDEATHSIG); count the lost attempt
        and put a new worker in its place."""
        self.receive(worker)  # a last "done" may be waiting in the pipe
        if worker.task is not None:
            log.warning("the encode worker running variation %s died", worker.task["id"])
            self.storage.work_path(worker.task["output_path"]).unlink(missing_ok=True)
            lost: Outcome = (
                {"outcome": "interrupted"} if self.stopping.is_set() else {"outcome": "failed", "error": LOST_WORKER}
            )
            self.unrecorded.append(_Outcome(worker.task, lost))
        worker.pipe.close()
        worker.process.join(1)
        index = self.workers.index(worker)
        if self.stopping.is_set():
            self.workers.pop(index)
        else:
            self.workers[index] = self.start_worker(index)

    # --- outcomes ------------------------------------------------------------------------
    def record_outcomes(self) -> None:
        """Hand every reported outcome to the store. One it cannot take (a
        locked database, a full disk) stays for the next tick, so a variation
        never stays "processing" for ever."""
        waiting, self.unrecorded = self.unrecorded, []
        for index, item in enumerate(waiting):
            try:
                self.record(item)
            except (StoreError, StorageError, OSError):
                self.unrecorded.extend(waiting[index:])
                raise

    def record(self, item: _Outcome) -> None:
        task, result = item.task, item.result
        outcome = result["outcome"]
        if outcome == "failed" and (self.stopping.is_set() or self.control.shutting_down()):
            outcome = "interrupted"  # ffmpeg got the shutdown signal too
        if outcome == "failed":
            log.warning("variation %s failed: %s", task["id"], result.get("error"))
        if result.get("stopStage"):
            log.info("variation %s %s: its ffmpeg stopped on %s", task["id"], outcome, result.get("stopStage"))
        self.progress.pop(task["id"], None)
        _job, status = self.store.record_outcome(
            task["id"],
            outcome,
            time.time(),
            self.ttl,
            error=result.get("error"),
            size=result.get("size"),
            host=self.host,
        )
        if status is not None:
            self.control.clear_cancel(task["job_seq"])
            log.info("job %s %s", task["job_id"], status)
            self.storage.release_job(task["job_id"])

    # --- claiming work ---------------------------------------------------------------------
    def dispatch(self, now: float) -> None:
        """A task for every idle worker. After a claim came back empty, the
        next is tried once the database has changed (on SQLite: see
        `ChangeWatch`), or QUIET_LOOK_SECONDS later."""
        idle = [w for w in self.workers if w.task is None and w.process.is_alive()]
        if not idle or (not self._may_have_work and now - self._last_empty_claim < QUIET_LOOK_SECONDS):
            return
        for worker in idle:
            task = self.claim()
            if task is None:
                self._may_have_work, self._last_empty_claim = False, now
                return
            worker.task = task
            worker.pipe.send(task)

    def claim(self) -> Task | None:
        """The next variation, fairly between jobs. A queued job starts only
        once the disk can hold its outputs; one that cannot fails before it
        starts."""
        for _ in range(20):  # a few queued jobs to start (or fail) first
            try:
                claimed = self.store.claim_next_variation(self.host, time.time())
                if claimed is None:
                    return None
                # The job is not cancelled (else no claim): a flag left from a
                # cancel before a resume must not stop it. A cancel accepted
                # after this claim is flagged again by propagate_cancels.
                self.control.clear_cancel(claimed["job_seq"])
                return task_of(claimed)
            except JobNotStarted as waiting:
                job = waiting.job
                problem = lifecycle.make_room_for(self.store, self.settings, job)
                if problem is not None:
                    log.error("job %s cannot start: %s", job["id"], problem)
                    self.store.fail_queued_job(job["id"], problem, time.time(), self.ttl)
                else:
                    self.store.start_job(job["id"], time.time())
        return None

    # --- cancels ------------------------------------------------------------------------------
    def propagate_cancels(self) -> None:
        """The store is the truth: every cancel it records gets its flag here
        (a web process of another server may have accepted it), and a
        cancelled job with nothing running any more settles."""
        running = {w.task["job_id"] for w in self.workers if w.task is not None}
        for job in self.store.cancel_requested_jobs():
            self.control.request_cancel(job["seq"])
            if job["id"] not in running:
                self.store.settle_job(job["id"], time.time(), self.ttl)

    def release_finished_scratch(self) -> None:
        """Drop this host's scratch copies of jobs that are over (finished
        on another host, or deleted); those of live jobs stay for their next
        variations here."""
        for job_id in self.storage.held_jobs():
            if any(w.task is not None and w.task["job_id"] == job_id for w in self.workers):
                continue
            job = self.store.get_job(job_id)
            if job is None or job["status"] in FINAL:
                self.storage.release_job(job_id)

    def poll_cancels(self, now: float, changed: bool) -> None:
        """propagate_cancels every CANCEL_DB_POLL_SECONDS (default: on SQLite,
        on every tick where the database changed, else each QUIET_LOOK_SECONDS;
        each second on PostgreSQL, where cancels are announced), and on the
        tick after a claim: a claim clears its job's flag, and a cancel
        announced between the claim and that clearing would be lost until
        the next poll."""
        interval = self.settings.cancel_db_poll_seconds
        if interval is None:
            if self.settings.uses_postgres:
                interval = POSTGRES_CANCEL_POLL_SECONDS
            else:
                interval = 0.0 if changed else QUIET_LOOK_SECONDS
        tasks = {w.task["id"] for w in self.workers if w.task is not None}
        if now - self._last_cancel_poll < interval and tasks <= self._polled_tasks:
            return
        self._last_cancel_poll, self._polled_tasks = now, tasks
        self.propagate_cancels()

    def start_cancel_listener(self) -> None:
        """PostgreSQL: a thread that sets this host's cancel flags as soon as
        the database announces a cancel (NOTIFY), not at the next poll."""
        if not self.settings.uses_postgres:
            return
        threading.Thread(target=self.listen_for_cancels, name="cancel-listener", daemon=True).start()

    def listen_for_cancels(self) -> None:
        """The listener thread. The poll in the main loop stays the fallback:
        a lost connection is made again, and once listening again, one poll
        catches the cancels announced while nobody listened."""
        listener = CancelListener(self.store)
        lost = False
        last_ping = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    if listener.conn is None:
                        listener.connect()
                        for job in self.store.cancel_requested_jobs():
                            self.control.request_cancel(job["seq"])
                        if lost:
                            log.warning("listening for cancels again")
                            lost = False
                    for seq, _job_id in listener.wait(LISTEN_SECONDS):
                        self.control.request_cancel(seq)
                    if time.monotonic() - last_ping >= LISTEN_PING_SECONDS:
                        last_ping = time.monotonic()
                        listener.ping()
                except Exception as exc:  # noqa: BLE001 - psycopg's, the store's or the OS's: any means reconnect
                    if not lost:
                        log.warning(
                            "listening for cancels: %s; trying again (the database poll goes on)",
                            str(exc).strip() or type(exc).__name__,
                        )
                    lost = True
                    listener.close()
                    self.stopping.wait(LISTEN_RETRY_SECONDS)
        finally:
            listener.close()

    def running_anywhere(self) -> set[str]:
        """Variations being encoded now, here or on another host: their
        partial files are not strays."""
        mine = {w.task["id"] for w in list(self.workers) if w.task is not None}
        return mine | {row["id"] for row in self.store.running_variations()}

    # --- hosts that fell silent --------------------------------------------------------------
    def reclaim_from_silent_hosts(self) -> None:
        """A host with no heartbeat for HOST_TIMEOUT_SECONDS is presumed dead:
        its claimed variations go back to the queue as interrupted (what it
        finished stays), and it is forgotten."""
        now = time.time()
        for host in self.store.silent_hosts(now, self.settings.host_timeout_seconds):
            if host == self.host:
                continue
            running = self.store.running_variations(host)
            for row in running:
                self.store.record_outcome(row["id"], "interrupted", now, self.ttl, host=host)
            self.store.forget_host(host, silent_since=now - self.settings.host_timeout_seconds)
            log.warning("host %s fell silent; %d of its variation(s) went back to the queue", host, len(running))

    # --- one process per host id -------------------------------------------------------------
    def take_host_id(self) -> bool:
        """Make HOST_ID this run's in the store before touching any of its
        claims; raise HostIdInUse when a live process holds it. A holder
        whose heartbeat is younger than HOST_TIMEOUT_SECONDS may be a
        predecessor that just died (a crash, kill -9): on this machine its pid
        tells at once; elsewhere its heartbeat is watched until it moves
        (alive: refuse) or grows stale (dead: take over). SQLite serves one
        host, whose supervisor is alone by its DATA_DIR lock. False when told
        to stop meanwhile."""
        timeout = self.settings.host_timeout_seconds if self.settings.uses_postgres else 0
        seen = None
        while not self.stopping.is_set():
            holder = self.store.register_host(self.host, self.instance, self.machine, os.getpid(), time.time(), timeout)
            if holder is None:
                return True
            here = holder["machine"] == self.machine
            if here and not _our_process_alive(holder["pid"]):
                if self.store.take_over_host(self.host, holder, self.instance, self.machine, os.getpid(), time.time()):
                    log.warning(
                        "HOST_ID %s: its previous supervisor (pid %s) is gone; taking over", self.host, holder["pid"]
                    )
                    return True
                continue
            if here or (
                seen is not None
                and seen["instance"] == holder["instance"]
                and seen["heartbeat_at"] != holder["heartbeat_at"]
            ):
                raise HostIdInUse(self.host, holder, here)
            if seen is None or seen["instance"] != holder["instance"]:
                log.warning(
                    "HOST_ID %s was in use %.1f s ago by pid %s on another machine; waiting up to %g s "
                    "to tell whether it is still alive",
                    self.host,
                    time.time() - holder["heartbeat_at"],
                    holder["pid"],
                    timeout,
                )
            seen = holder
            self.stopping.wait(HEARTBEAT_SECONDS / 4)
        return False

    # --- start-up recovery ---------------------------------------------------------------------
    def recover(self) -> None:
        """After a restart or crash: no ffmpeg from before keeps running, no
        partial output survives, finished variations are kept, and interrupted
        ones go back to the queue (their jobs resume from them). Only this
        host's claims: other hosts may be running theirs."""
        now = time.time()
        mine = self.host if self.settings.uses_postgres else None
        for row in self.store.running_variations(mine):
            partial = self.storage.work_path(row["output_path"])
            _kill_stale_ffmpeg(row, partial)
            partial.unlink(missing_ok=True)
            size = self.storage.size(row["output_path"])
            if size is not None:  # stored just before the crash: it is complete
                self.store.record_outcome(row["id"], "completed", now, self.ttl, size=size)
            else:
                self.store.record_outcome(row["id"], "interrupted", now, self.ttl)

    # --- the cleanup daemon ------------------------------------------------------------------------
    def start_scheduler(self) -> None:
        self.scheduler = scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(
            self.cleanup,
            "interval",
            seconds=self.settings.cleanup_interval_seconds,
            id="cleanup",
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()

    def cleanup(self) -> None:
        """A cleanup pass, on one host of the cluster at a time."""
        with self.store.cluster_lock("cleanup") as mine:
            if not mine:
                log.info("cleanup pass skipped: another host runs one")
                return
            lifecycle.run_cleanup(self.store, self.settings, running=self.running_anywhere(), storage=self.storage)

    # --- one supervisor per DATA_DIR ----------------------------------------------------------------
    def take_data_dir_lock(self) -> bool:
        """One supervisor per DATA_DIR, even when two servers are started on it
        by mistake: the second waits, serving nothing, until the lock is free."""
        self.lock_file = open(self.data_dir / SUPERVISOR_LOCK, "a+")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or "another process"
            log.error(
                "another supervisor (pid %s) already runs on %s; this server's supervisor "
                "waits until it stops and takes over then",
                holder,
                self.data_dir,
            )
            while not self.stopping.is_set():
                if os.getppid() != self.parent_pid:
                    return False
                self.control.beat(os.getpid(), standby=True)
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

    # --- shutting down ---------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Running ffmpeg stop gracefully, their variations go back to the
        queue, the workers exit; bounded by SHUTDOWN_SECONDS."""
        if self._store is None:
            return  # never got the DATA_DIR lock: nothing was started
        self.stopping.set()
        self.control.set_shutdown(True)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        while any(w.task is not None for w in self.workers) and time.monotonic() < deadline:
            self.listen(0.1)
        for worker in self.workers:
            try:
                worker.pipe.send(None)
            except OSError:
                pass
        for worker in self.workers:
            worker.process.join(max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()  # its ffmpeg dies with it
                worker.process.join(1)
            if worker.task is not None:  # it never reported: its attempt was interrupted
                self.storage.work_path(worker.task["output_path"]).unlink(missing_ok=True)
                self.unrecorded.append(_Outcome(worker.task, {"outcome": "interrupted"}))
                worker.task = None
        try:
            self.record_outcomes()
            self.store.forget_host(self.host, self.instance)  # its work is back in the queue
        except (StoreError, OSError) as exc:  # the next start's recovery takes them over
            log.error("recording outcomes at shutdown: %s", exc)
        if self.changes is not None:
            self.changes.close()
        if self.wake is not None:
            self.control.close_wake_socket(self.wake)
            self.wake = None
        self.store.close()
        self.control.mark_stopped(clean=True)
        log.info("supervisor %d stopped%s", os.getpid(), f" on {self.stopped_by}" if self.stopped_by else "")


def _machine() -> str:
    """Where a pid names one process: this kernel's boot and this pid
    namespace (containers on one kernel share the boot, not the namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "unknown-namespace"
    return f"{boot} {namespace}"


def _our_process_alive(pid: int) -> bool:
    """A live process of this service with that pid (pids are reused)."""
    if pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"refresher" in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def _kill_stale_ffmpeg(row: dict, partial: Path) -> None:
    """Kill an ffmpeg recorded by a run before this one, but only if that pid
    really is our ffmpeg writing this variation's partial file (pids are reused)."""
    pid = row.get("ffmpeg_pid")
    if not pid:
        return
    marker = str(partial)
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
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        multiprocessing.connection.wait([pidfd], timeout=1)
    finally:
        os.close(pidfd)


def run_supervisor(settings: Settings, control: ControlBlock, parent_pid: int | None = None) -> None:
    """The supervisor process's work, with its signals and its log. It stops
    when the process `parent_pid` (by default, its parent now) is gone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per cleanup pass
    # Its parent migrated the schema already; the check repeats two lines that say nothing.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    supervisor = Supervisor(settings, control, parent_pid)

    def stop(signum, frame):
        supervisor.stopped_by = signal.Signals(signum).name
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor.run()


def main(argv: list[str] | None = None) -> None:
    """`python -m refresher.engine --control PATH --parent PID` (see
    `__main__.py`), with the settings as JSON on stdin: how SupervisorHandle
    starts it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="the control block's file")
    parser.add_argument(
        "--parent",
        type=int,
        required=True,
        help="the pid of the server that starts it: it gets SIGTERM when that one dies",
    )
    args = parser.parse_args(argv)
    # Before anything else: a server killed with -9 (gunicorn's master, say)
    # runs no shutdown of its own, so its supervisor must hear of it.
    if not lifeline.follow_parent(signal.SIGTERM, args.parent):
        sys.stderr.write(f"the server that started this supervisor (pid {args.parent}) is gone; it does not start\n")
        sys.exit(1)
    settings = Settings.from_json(sys.stdin.read())
    control = ControlBlock(args.control)
    try:
        run_supervisor(settings, control, args.parent)
    except HostIdInUse as exc:
        # Its parent tries again after a pause: the holder may yet stop.
        log.error("%s", exc)
        control.mark_stopped(clean=True)
        sys.exit(2)
