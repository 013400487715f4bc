"""Resumable uploads (the tus protocol, `refresher.resumable`): one row per
upload, so that whichever web process gets its next PATCH, or a restarted
one, knows how far it got. A PATCH is received under a hold on the row (its
`holder`, until `held_until`), taken and given back here, so that two
requests never append to one upload at once."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, insert, select, update

from .database import Database, for_update
from .rows import mapping
from .schema import uploads


class UploadClaimed(Exception):
    """An upload given for a job is not free to make one (the message says why)."""


class Uploads(Database):
    def create_upload(self, row: dict) -> None:
        with self.writing() as conn:
            conn.execute(insert(uploads).values(**row))

    def get_upload(self, upload_id: str) -> dict | None:
        with self.reading() as conn:
            return mapping(conn.execute(select(uploads).where(uploads.c.id == upload_id)).first())

    def take_upload(
        self, upload_id: str, holder: str, until: float, now: float, may_take: Callable[[str], bool]
    ) -> dict | None:
        """Hold the upload for a PATCH: unless someone else holds it (and
        `may_take(their holder)` says they are gone), it becomes `holder`'s
        until `until`. The row as it then is (its holder says who got it);
        None if there is no such upload."""
        with self.writing() as conn:
            row = mapping(conn.execute(for_update(conn, select(uploads).where(uploads.c.id == upload_id))).first())
            if row is None:
                return None
            held = row["holder"] is not None and (row["held_until"] or 0) > now and not may_take(row["holder"])
            if held:
                return row
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(holder=holder, held_until=until))
            return {**row, "holder": holder, "held_until": until}

    def advance_upload(self, upload_id: str, holder: str, release: bool = False, **fields) -> bool:
        """Write what a PATCH received so far (and keep holding the upload, or
        let go of it); False when the upload is gone or no longer `holder`'s."""
        if release:
            fields.update(holder=None, held_until=None)
        with self.writing() as conn:
            changed = conn.execute(
                update(uploads).where(uploads.c.id == upload_id, uploads.c.holder == holder).values(**fields)
            )
            return changed.rowcount == 1

    def record_upload(self, upload_id: str, **fields) -> None:
        with self.writing() as conn:
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(**fields))

    def delete_upload(self, upload_id: str) -> dict | None:
        """Remove the row; what it was (None if there was none)."""
        with self.writing() as conn:
            row = mapping(conn.execute(for_update(conn, select(uploads).where(uploads.c.id == upload_id))).first())
            if row is not None:
                conn.execute(delete(uploads).where(uploads.c.id == upload_id))
            return row

    def claim_uploads(self, upload_ids: list[str], job_id: str) -> None:
        """The uploads become the job's, all or none: raises UploadClaimed
        naming one that made a job already, or is gone."""
        with self.writing() as conn:
            rows = {
                r["id"]: r
                for r in map(
                    mapping,
                    conn.execute(for_update(conn, select(uploads).where(uploads.c.id.in_(upload_ids)))).all(),
                )
            }
            for upload_id in upload_ids:
                row = rows.get(upload_id)
                if row is None:
                    raise UploadClaimed(f"there is no upload {upload_id}")
                if row["job_id"] is not None:
                    raise UploadClaimed(f"upload {upload_id} ({row['name']}) made job {row['job_id']} already")
            conn.execute(update(uploads).where(uploads.c.id.in_(upload_ids)).values(job_id=job_id))

    def unclaim_uploads(self, upload_ids: list[str], job_id: str) -> None:
        """The job was not made after all: the uploads are free again."""
        with self.writing() as conn:
            conn.execute(
                update(uploads).where(uploads.c.id.in_(upload_ids), uploads.c.job_id == job_id).values(job_id=None)
            )

    def expired_uploads(self, now: float) -> list[dict]:
        with self.reading() as conn:
            return [mapping(r) for r in conn.execute(select(uploads).where(uploads.c.expires_at <= now)).all()]

    def upload_ids(self) -> set[str]:
        with self.reading() as conn:
            return set(conn.execute(select(uploads.c.id)).scalars())
