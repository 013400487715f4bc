"""An engine process ends when the process that started it does: the
supervisor when its server dies (even by kill -9), an encode worker when its
supervisor dies.

The kernel sends a chosen signal when the parent dies (PR_SET_PDEATHSIG).
The child asks for it itself, first thing, rather than between fork and
exec (Python's preexec_fn), which is unsafe in a parent that has threads.
Asked that late, the parent may already be gone, and then no signal would
ever come: so the child also checks that its parent is still the process
it was told to expect.

And it ends at once when its work is done (`exit_at_once`).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import sys

_PR_SET_PDEATHSIG = 1


def follow_parent(signum: int, parent_pid: int) -> bool:
    """Get `signum` when the parent dies. False if the parent `parent_pid`
    is gone already (this process was handed to another): the caller stops."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signum) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"prctl(PR_SET_PDEATHSIG): {os.strerror(number)}")
    return os.getppid() == parent_pid


def exit_at_once() -> None:
    """End the process now that everything is stopped, recorded and closed:
    the interpreter's own teardown of the supervisor's libraries took another
    second of CPU (measured with strace) before a platform saw it go. What
    was registered to run at exit still runs (logging's flush among it)."""
    atexit._run_exitfuncs()  # (what a normal exit runs first; the teardown after it is skipped)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
