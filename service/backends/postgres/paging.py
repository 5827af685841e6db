"""Keyset pages of a PostgreSQL table, newest first, as :func:`service.jobs.store.newest_first` gives SQLite's."""

from __future__ import annotations

from typing import Any

from service.backends.postgres.database import Connection
from service.jobs.rows import InvalidCursor, is_utf8

_NOT_OURS = "cursor is not a next_cursor this listing gave (pass next_cursor back as given)"


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold ``text`` at all (no NUL, no lone surrogate): an id that fails this names no
    row, and must not reach the server, which would refuse the whole statement."""
    return "\x00" not in text and is_utf8(text)


def newest_first(
    connection: Connection,
    table: str,
    columns: str,
    owner: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[Any, ...]], str | None]:
    """One page of ``table``'s rows (``columns``, the id first), newest first, of ``owner``'s (None: everyone's);
    ``cursor`` is the id of the last row of the previous page. ``table`` and ``columns`` are the stores' own
    constants, never a caller's text."""
    conditions: list[str] = []
    args: list[Any] = []
    if owner is not None:
        conditions.append("owner = %s")
        args.append(owner)
    if cursor:
        after = None
        if storable(cursor):
            after = connection.execute(f"SELECT created_at, id FROM {table} WHERE id = %s", (cursor,)).fetchone()
        if after is None:
            raise InvalidCursor(_NOT_OURS)
        conditions.append("(created_at, id) < (%s, %s)")
        args.extend(after)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    query = f"SELECT {columns} FROM {table}{where} ORDER BY created_at DESC, id DESC LIMIT %s"
    rows = connection.execute(query, (*args, limit + 1)).fetchall()
    return rows[:limit], (rows[limit - 1][0] if len(rows) > limit else None)
