"""Rows as the rest of the service sees them: plain dicts, and the states
`refresher.rules` decides on (read from a row, written back as its fields)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, overload

from .. import rules

if TYPE_CHECKING:
    from sqlalchemy.engine import Row


@overload
def mapping(row: Row[Any]) -> dict: ...
@overload
def mapping(row: None) -> None: ...


def mapping(row: Row[Any] | None) -> dict | None:
    """A row as a plain dict. Its keys are made plain `str`: SQLAlchemy names
    columns with a `str` subclass of its own, and a task pickled down an
    encode worker's pipe with such keys would make the worker import
    SQLAlchemy just to read it."""
    return {str(key): value for key, value in row._mapping.items()} if row is not None else None


def variation_state(row: Mapping) -> rules.Variation:
    return rules.Variation(
        status=row["status"],
        attempts=row["attempts"],
        failures=row["failures"],
        interruptions=row["interruptions"],
        progress=row["progress"],
        error=row["error"],
    )


def job_state(row: Mapping) -> rules.Job:
    return rules.Job(
        status=row["status"],
        cancel_requested=row["cancel_requested_at"] is not None,
        progress=row["progress"],
        error=row["error"],
    )


def variation_fields(state: rules.Variation) -> dict:
    """The columns of a variation that its state sets."""
    return {
        "status": state.status,
        "attempts": state.attempts,
        "failures": state.failures,
        "interruptions": state.interruptions,
        "progress": state.progress,
        "error": state.error,
    }


def job_fields(state: rules.Job) -> dict:
    """The columns of a job that its state sets (a cancel's request is a time,
    written where it is accepted)."""
    return {"status": state.status, "progress": state.progress, "error": state.error}
