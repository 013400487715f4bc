"""The one error the service's own layers raise when a request cannot be
done: a status a client understands and a sentence a person can act on.
It knows nothing of HTTP; `api/errors.py` turns it into the JSON answer."""

from __future__ import annotations


class Rejected(Exception):
    """`code` is the HTTP-style status (400, 404, 409, 413, 415, 503 …);
    `extra` goes into the answer beside the message (e.g. file=, status=)."""

    def __init__(self, code: int, message: str, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra
