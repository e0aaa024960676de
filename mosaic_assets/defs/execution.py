"""How steps execute: multiprocess on one machine, one Kubernetes Job per step on a cluster.

The executor is set on ``Definitions`` (not in run config) so that backfill, sensor and automation
runs use it too; otherwise asset ``op_tags`` would be ignored by them. The chunk writer's pod shape
and its GDAL caches come from the same constants here: its ``WRITER_CPU`` writer threads share one
process's GDAL caches, sized from the pod's memory limit (``worker_config(WRITER_MEMORY_GB)``), so the
two cannot drift apart. Requests equal limits because
dagster-k8s merges ``dagster-k8s/config`` DEEP over the code location's resources: a request set
alone could land above an inherited limit, which Kubernetes rejects.

``python -m mosaic_assets.defs.execution pools`` sets the concurrency-pool limits on the instance
at $DAGSTER_HOME (Dagster's instance config has a default pool limit, not per-pool ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

import dagster as dg
from dagster_k8s import k8s_job_executor

from mosaic_assets.engine.capacity import CPUS_ENV
from mosaic_assets.engine.gdal_env import MEMORY_ENV, worker_config
from mosaic_assets.engine.parallel_write import WRITERS_ENV

EXECUTOR_ENV = "MOSAIC_EXECUTOR"  # "k8s" on the cluster (deploy/helm/values.yaml), unset locally
K8S_CONFIG_TAG = "dagster-k8s/config"

WRITER_CPU = 3
WRITER_MEMORY_GB = 8  # GiB: the pod's memory request and limit, and what GDAL's caches are sized from
WRITER_EPHEMERAL_GB = 20  # GDAL's /vsis3/ temp files, zarr/fsspec spill, Python's own temp
JOB_TTL_SECONDS = 3600  # finished step Jobs (and their pods) are deleted after an hour
MAX_PODS_PER_RUN = 32  # one ranged backfill run never floods the cluster on its own

TEMPLATE_POOL = "mosaic_template"  # the template grows the store's time axis: one writer at a time
STORE_WRITES_POOL = "mosaic_store_writes"  # all chunk writers of the deployment, across runs
POOL_LIMITS = {TEMPLATE_POOL: 1, STORE_WRITES_POOL: 200}


def writer_resources() -> dict[str, dict[str, str]]:
    """The chunk writer's pod resources; requests == limits (Guaranteed QoS, never a DEEP-merge mismatch)."""
    amounts = {
        "cpu": str(WRITER_CPU),
        "memory": f"{WRITER_MEMORY_GB}Gi",
        "ephemeral-storage": f"{WRITER_EPHEMERAL_GB}Gi",
    }
    return {"requests": dict(amounts), "limits": dict(amounts)}


def writer_env() -> list[dict[str, str]]:
    """The writer's environment: its CPUs (one writer thread each, ``parallel_write``), its kind of
    writers, its memory (read by gdal_env at run time) and the GDAL options its writers use (the whole
    memory: the threads share the process's caches), spelled out so the Job spec shows what GDAL will use."""
    env = {
        CPUS_ENV: str(WRITER_CPU),
        MEMORY_ENV: str(WRITER_MEMORY_GB),
        WRITERS_ENV: "threads",
        **worker_config(WRITER_MEMORY_GB, threads=1),
    }
    return [{"name": name, "value": value} for name, value in env.items()]


def chunk_writer_k8s_config() -> dict:
    return {"container_config": {"resources": writer_resources(), "env": writer_env()}}


def chunk_writer_tags() -> dict[str, str]:
    """``op_tags`` for the chunk-writer asset: its pod shape under ``k8s_job_executor`` (ignored locally)."""
    return {K8S_CONFIG_TAG: json.dumps(chunk_writer_k8s_config(), sort_keys=True)}


def k8s_executor_config() -> dict:
    """Executor config; image, namespace, service account, env and secrets come from the code location
    (the Helm chart's ``includeConfigInLaunchedRuns``), so one image tag runs every step of a run."""
    return {
        "max_concurrent": MAX_PODS_PER_RUN,
        "step_k8s_config": {"job_spec_config": {"ttl_seconds_after_finished": JOB_TTL_SECONDS}},
    }


def executor_for(env: Mapping[str, str] = os.environ) -> dg.ExecutorDefinition:
    """``k8s_job_executor`` when ``MOSAIC_EXECUTOR=k8s``, else Dagster's multiprocess executor."""
    kind = env.get(EXECUTOR_ENV, "") or "multiprocess"
    if kind == "k8s":
        return k8s_job_executor.configured(k8s_executor_config(), name="mosaic_k8s")
    if kind == "multiprocess":
        return dg.multiprocess_executor
    raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected 'k8s' or 'multiprocess'")


def store_writes_pool(env: Mapping[str, str] = os.environ) -> str | None:
    """The chunk writer's pool on a cluster; none locally, where the default pool limit (1) would
    serialise writes that the local instance already bounds by its run limit."""
    return STORE_WRITES_POOL if env.get(EXECUTOR_ENV) == "k8s" else None


def apply_pool_limits(instance: dg.DagsterInstance, limits: Mapping[str, int] = POOL_LIMITS) -> dict[str, int]:
    """Set each pool's limit on the instance (idempotent); returns what the instance now holds."""
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in limits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mosaic_assets.defs.execution")
    parser.add_argument("command", choices=["pools", "writer-tags"])
    args = parser.parse_args(argv)
    if args.command == "writer-tags":
        print(json.dumps(chunk_writer_k8s_config(), indent=2))
        return 0
    with dg.DagsterInstance.get() as instance:
        for pool, limit in apply_pool_limits(instance).items():
            print(f"pool {pool}: limit {limit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
