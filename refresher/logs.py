"""The service's log: one format for every process, the level LOG_LEVEL
sets, and the libraries whose INFO lines say nothing to whoever runs the
service (boto3 finding its credentials, a connection pool's every reconnect,
a scheduler's every pass) kept to their warnings."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Heard only when they warn, whatever LOG_LEVEL says.
QUIET = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "apscheduler",  # not a line per cleanup pass
    "alembic.runtime.migration",  # the schema check repeats two lines that say nothing
)


def configure(level: str, *, replace_handlers: bool = False) -> None:
    """Log to stderr at `level` (LOG_LEVEL). A process that has a handler
    already (gunicorn's, a test's) keeps it unless `replace_handlers`."""
    root = logging.getLogger()
    if replace_handlers or not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
