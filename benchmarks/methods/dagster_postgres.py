"""Ours via Dagster with the instance's storage on PostgreSQL, as deploy/dagster.yaml has it on a
cluster: the same ``build`` as ``dagster``, with run, event and schedule storage in a fresh database
on the benchmark's PostgreSQL server (the one under its STAC API) instead of SQLite files.

Why measure both: SQLite (the local instance) creates a database file per run and serialises
writers on a file lock; a cluster's runs write to one PostgreSQL over the network. The run-level
cost Dagster adds differs between the two, and a cluster is where the large builds run.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..job import Job
from .dagster import dagster_env, output, prepare_instance, run

__all__ = ["output", "run", "setup"]


def _connection(dsn: str) -> dict[str, str]:
    """``host=… port=… user=… password=…`` (libpq keywords) as a dict."""
    return dict(part.split("=", 1) for part in dsn.split())


def fresh_database(dsn: str, name: str) -> None:
    import psycopg2

    admin = psycopg2.connect(dbname="postgres", **_connection(dsn))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()


def setup(job: Job) -> None:
    if not job.postgres:
        raise RuntimeError("dagster_postgres needs a PostgreSQL server: benchmarks.run --postgres 'host=… port=…'")
    database = "bench_dagster"
    fresh_database(job.postgres, database)
    conn = _connection(job.postgres)
    env = dagster_env(job)
    config_path = Path(env["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["storage"] = {
        "postgres": {
            "postgres_db": {
                "hostname": conn.get("host", "127.0.0.1"),
                "port": int(conn.get("port", 5432)),
                "username": conn.get("user", "postgres"),
                "password": conn.get("password", ""),
                "db_name": database,
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    config_path.write_text(yaml.safe_dump(config))
    prepare_instance(env)
