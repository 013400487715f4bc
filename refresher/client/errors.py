"""Exit codes a shell script can act on, and the one error type that carries them.

Every failure the client expects ends up as a `ClientError`: `cli.main`
prints its message as one line on stderr and exits with its code.
"""

from __future__ import annotations

OK = 0  # done; for `--wait`, the job completed
REFUSED = 1  # the server refused the request (bad input, wrong job state, server error)
USAGE = 2  # bad options or arguments (argparse uses 2 as well)
JOB_FAILED = 3  # the job ended `failed`
JOB_CANCELLED = 4  # the job ended `cancelled`
AUTH = 5  # no token, or the token or password was refused (401/403)
NOT_FOUND = 6  # unknown or expired job (404/410)
UNREACHABLE = 7  # no answer from the server, or not this API answering
NO_OUTPUTS = 8  # `download`: the job exists but has no outputs (none made, or not finished yet)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells do)

# A job's final status → the exit code of a command that waited for it.
FINAL_STATUS_CODES = {"completed": OK, "failed": JOB_FAILED, "cancelled": JOB_CANCELLED}


class ClientError(Exception):
    """A failure to report on one line, with the exit code that names its kind."""

    def __init__(self, code: int, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # the HTTP status, when the server answered
        self.body = body  # the server's JSON error body, when there was one


def code_for_http_status(status: int) -> int:
    if status in (401, 403):
        return AUTH
    if status in (404, 410):
        return NOT_FOUND
    return REFUSED
