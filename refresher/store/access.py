"""Who may call, as every process and host must see it alike: the secrets
they share (a generated password, the key that signs sessions), API tokens,
sessions ended before they expire (sign-out), and the counters of the
sign-in rate limit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import delete, insert, select, update

from .database import Database, disk_is_full, through_a_full_disk
from .rows import mapping
from .schema import api_tokens, ended_sessions, rate_limits, secrets

EVERY_SESSION = "*"  # the ended_sessions row that ends every session begun before it

# Whether a session was ended, on its own or with every other: asked on every request.
_ENDED_SESSIONS = select(ended_sessions.c.id, ended_sessions.c.ended_at).where(
    ended_sessions.c.id.in_([sa.bindparam("session_id"), EVERY_SESSION])
)


class Access(Database):
    # --- secrets every host shares ---------------------------------------------------------
    def secret(self, name: str, make, now: float) -> tuple[str, bool]:
        """The secret called `name`, made with `make()` by whichever process
        asks first; (value, whether this call made it)."""
        with self.writing() as conn:
            made = (
                conn.execute(
                    self.upsert(secrets)
                    .values(name=name, value=make(), created_at=now)
                    .on_conflict_do_nothing(index_elements=[secrets.c.name])
                    .returning(secrets.c.name)
                ).first()
                is not None
            )
            value = conn.execute(select(secrets.c.value).where(secrets.c.name == name)).scalar_one()
        return value, made

    def set_note(self, name: str, value: str, now: float) -> None:
        """Keep `value` under `name` beside the secrets, replacing what was there
        (what every host should know of how the service was last started)."""
        with self.writing() as conn:
            conn.execute(
                self.upsert(secrets)
                .values(name=name, value=value, created_at=now)
                .on_conflict_do_update(index_elements=[secrets.c.name], set_={"value": value, "created_at": now})
            )

    def note(self, name: str) -> str | None:
        with self.reading() as conn:
            return conn.execute(select(secrets.c.value).where(secrets.c.name == name)).scalar()

    # --- API tokens ------------------------------------------------------------------------------
    @through_a_full_disk
    def create_api_token(self, token_id: str, name: str, token_hash: str, now: float) -> None:
        with self.writing() as conn:
            conn.execute(insert(api_tokens).values(id=token_id, name=name, token_hash=token_hash, created_at=now))

    def find_api_token(self, token_hash: str) -> dict | None:
        with self.reading() as conn:
            return mapping(conn.execute(select(api_tokens).where(api_tokens.c.token_hash == token_hash)).first())

    def api_token_exists(self, token_id: str) -> bool:
        with self.reading() as conn:
            return conn.execute(select(api_tokens.c.id).where(api_tokens.c.id == token_id)).first() is not None

    def list_api_tokens(self) -> list[dict]:
        with self.reading() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(
                        api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, api_tokens.c.last_used_at
                    ).order_by(api_tokens.c.created_at, api_tokens.c.id)
                )
            ]

    def touch_api_token(self, token_id: str, now: float, granularity: float = 60) -> None:
        """Record use, but write at most once a `granularity` per token; on a
        full disk not at all (the token works all the same)."""
        try:
            with self.writing() as conn:
                conn.execute(
                    update(api_tokens)
                    .where(
                        api_tokens.c.id == token_id,
                        sa.or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at < now - granularity),
                    )
                    .values(last_used_at=now)
                )
        except sa.exc.OperationalError as exc:
            if not disk_is_full(exc):
                raise

    @through_a_full_disk
    def delete_api_token(self, token_id: str) -> bool:
        with self.writing() as conn:
            return conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id)).rowcount == 1

    # --- sessions ended before they expire (sign-out) --------------------------------------------
    @through_a_full_disk
    def end_session(self, session_id: str, expires_at: float, now: float) -> None:
        """The session stops working everywhere at once; its row goes once the
        session would have expired anyway (rows of expired sessions go here
        too, so the table stays as small as the sessions still alive)."""
        with self.writing() as conn:
            conn.execute(delete(ended_sessions).where(ended_sessions.c.expires_at <= now))
            conn.execute(
                self.upsert(ended_sessions)
                .values(id=session_id, ended_at=now, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[ended_sessions.c.id])
            )

    @through_a_full_disk
    def end_every_session(self, now: float) -> None:
        """Every session begun until now stops working; later ones are unaffected.
        One row, kept for good (a later, shorter TOKEN_TTL_SECONDS must not
        bring back a session it ended)."""
        statement = self.upsert(ended_sessions).values(id=EVERY_SESSION, ended_at=now, expires_at=None)
        later = statement.excluded.ended_at > ended_sessions.c.ended_at  # two at once: the later one holds
        with self.writing() as conn:
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[ended_sessions.c.id],
                    set_={"ended_at": sa.case((later, statement.excluded.ended_at), else_=ended_sessions.c.ended_at)},
                )
            )

    def session_ended(self, session_id: str, begun_at: float) -> bool:
        """Whether this session was ended, on its own or with every other."""
        with self.reading() as conn:
            rows = conn.execute(_ENDED_SESSIONS, {"session_id": session_id}).all()
        return any(r.id == session_id or r.ended_at >= begun_at for r in rows)

    # --- rate limits (sign-in throttling, shared by every worker) ---------------------------------
    @through_a_full_disk
    def rate_limit_incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        """Add to a fixed-window counter, starting a new window when the old one expired."""
        with self.writing() as conn:
            conn.execute(delete(rate_limits).where(rate_limits.c.key == key, rate_limits.c.expires_at <= now))
            statement = self.upsert(rate_limits).values(key=key, count=amount, expires_at=now + expiry)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[rate_limits.c.key], set_={"count": rate_limits.c.count + statement.excluded.count}
                )
            )
            return conn.execute(select(rate_limits.c.count).where(rate_limits.c.key == key)).scalar_one()

    def rate_limit_get(self, key: str, now: float) -> tuple[int, float]:
        """(count, window end) of a live counter; (0, now) when there is none."""
        with self.reading() as conn:
            row = conn.execute(
                select(rate_limits.c.count, rate_limits.c.expires_at).where(
                    rate_limits.c.key == key, rate_limits.c.expires_at > now
                )
            ).first()
        if row is None:
            return 0, now
        count, expires_at = row  # (not row.count: to a type checker that is tuple.count)
        return count, expires_at

    def rate_limit_clear(self, key: str | None = None) -> int:
        with self.writing() as conn:
            statement = delete(rate_limits)
            if key is not None:
                statement = statement.where(rate_limits.c.key == key)
            return conn.execute(statement).rowcount
