"""The PostgreSQL schema as ordered migration steps, applied at start-up.

``schema_migrations`` records each applied step. Steps run in one transaction under an advisory lock, so replicas
starting together apply each step exactly once (the others wait, then find nothing left to do), and a failed step
leaves no half-made schema behind. A released step is never edited: a change is a new step at the end.

Columns holding JSON are ``text``, not ``jsonb``: the service reads them back as it wrote them (key order and
all), and jsonb refuses a ``\\u0000`` that a request's strings may hold. Results, pictures and model bodies are
``bytea``, stored and served as the exact bytes. Ids are ``COLLATE "C"`` so pages list in the same (byte) order
as SQLite's.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs",
        """
        CREATE TABLE jobs (
            id          text COLLATE "C" PRIMARY KEY,
            kind        text NOT NULL,
            status      text NOT NULL,
            created_at  double precision NOT NULL,
            started_at  double precision,
            finished_at double precision,
            request     text NOT NULL,
            progress    text,
            result      bytea,
            error       text,
            replay      text,
            owner       text,
            picture     bytea
        );
        CREATE INDEX jobs_by_created ON jobs (created_at DESC, id DESC);
        CREATE INDEX jobs_by_owner_created ON jobs (owner, created_at DESC, id DESC);
        CREATE INDEX jobs_by_status ON jobs (status);
        CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
        """,
    ),
    Migration(
        2,
        "models",
        """
        CREATE TABLE models (
            id          text COLLATE "C" PRIMARY KEY,
            owner       text,
            kind        text NOT NULL,
            created_at  double precision NOT NULL,
            used_at     double precision NOT NULL,
            job_id      text,
            body        bytea NOT NULL
        );
        CREATE INDEX models_by_created ON models (created_at DESC, id DESC);
        CREATE INDEX models_by_owner_use ON models (owner, used_at);
        """,
    ),
    Migration(
        3,
        "datasets",
        """
        CREATE TABLE datasets (
            id          text COLLATE "C" PRIMARY KEY,
            owner       text,
            kind        text NOT NULL,
            n           bigint NOT NULL,
            d           bigint NOT NULL,
            dtype       text NOT NULL,
            bytes       bigint NOT NULL,
            sha256      text NOT NULL,
            created_at  double precision NOT NULL,
            used_at     double precision
        );
        CREATE INDEX datasets_by_created ON datasets (created_at DESC, id DESC);
        """,
    ),
    Migration(
        4,
        "store probe",
        # One row the job store's probe rewrites: a write that tells whether the database takes writes again.
        "CREATE TABLE store_probe (id integer PRIMARY KEY, probed_at timestamptz NOT NULL);",
    ),
)

# pg_advisory_xact_lock's key: any constant that no other application on the database uses ("em_schem").
_LOCK_KEY = 0x656D5F736368656D


def migrate(connection: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """Apply the steps ``schema_migrations`` does not list yet; the versions this call applied."""
    applied: list[int] = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {version for (version,) in connection.execute("SELECT version FROM schema_migrations")}
        for step in MIGRATIONS:
            if step.version in done:
                continue
            connection.execute(step.sql.encode())  # bytes: no parameters, so several statements may run at once
            connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (step.version, step.name)
            )
            applied.append(step.version)
    return applied
