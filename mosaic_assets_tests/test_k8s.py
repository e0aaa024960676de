"""Kubernetes deployment without a cluster: the Job specs dagster-k8s would submit for a run and for a
chunk-writer step, built by dagster-k8s's own code from our deploy/ files, plus the instance config,
the Helm values and the Dockerfile."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster._core.instance.config import dagster_instance_config
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id, get_user_defined_k8s_config

from mosaic_assets.definitions import build_definitions
from mosaic_assets.defs.execution import (
    JOB_TTL_SECONDS,
    K8S_CONFIG_TAG,
    POOL_LIMITS,
    STORE_WRITES_POOL,
    TEMPLATE_POOL,
    WRITER_MEMORY_GB,
    apply_pool_limits,
    chunk_writer_tags,
    executor_for,
    store_writes_pool,
    writer_resources,
)
from mosaic_assets.engine.capacity import CPUS_ENV
from mosaic_assets.engine.gdal_env import MEMORY_ENV, worker_config
from mosaic_assets.engine.parallel_write import WRITERS_ENV

from .conftest import TEST_PG_PORT

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RELEASE, NAMESPACE = "dagster", "mosaic"
IMAGE = "registry.example.com/mosaic-assets:0.1.0"
SECRETS_IN_ENV = {"AWS_SECRET_ACCESS_KEY": "never-in-a-spec-1f2e", "STAC_API_TOKEN": "never-in-a-spec-9a8b"}


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def user_deployment() -> dict:
    (deployment,) = helm_values()["dagster-user-deployments"]["deployments"]
    return deployment


def chart_container_context(deployment: dict) -> dict:
    """The container context the chart's ``dagsterUserDeployments.k8sContainerContext`` helper puts on
    the code server (includeConfigInLaunchedRuns), which dagster-k8s merges into every run and step pod."""
    context = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env"]
        + [c["name"] for c in deployment.get("envConfigMaps", [])],
        "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
        "resources": deployment["resources"],
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
        "env": deployment["env"],
    }
    return {"k8s": context}


@pytest.fixture
def k8s_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real instance whose run launcher is deploy/dagster.yaml's K8sRunLauncher, pointed at a
    kubeconfig of a cluster that is never contacted (building a Job spec makes no API call)."""
    for name, value in SECRETS_IN_ENV.items():
        monkeypatch.setenv(name, value)  # in the launching process: must not leak into any spec
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]
    launcher["config"] |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def _k8s_defs() -> tuple[dg.Definitions, dg.AssetKey]:
    """The definitions as the cluster's code location loads them (MOSAIC_EXECUTOR=k8s, from the Helm values)."""
    previous = os.environ.get("MOSAIC_EXECUTOR")
    os.environ["MOSAIC_EXECUTOR"] = "k8s"
    try:
        defs = build_definitions(REPO / "specs" / "demo.yaml")
    finally:
        if previous is None:
            os.environ.pop("MOSAIC_EXECUTOR")
        else:
            os.environ["MOSAIC_EXECUTOR"] = previous
    chunks = next(k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[-1] == "mosaic_chunks")
    assert defs.executor.name == "mosaic_k8s"
    job = dg.define_asset_job("writer_job", selection=dg.AssetSelection.assets(chunks))
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])), chunks


def _run(instance: dg.DagsterInstance, job_name: str):
    origin = JobPythonOrigin(
        job_name,
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("mosaic_assets.definitions", "defs", working_directory=None),
            container_image=IMAGE,
            container_context=chart_container_context(user_deployment()),
        ),
    )
    return create_run_for_test(instance, job_name=job_name, job_code_origin=origin)


def run_job_spec(instance: dg.DagsterInstance) -> kubernetes.client.V1Job:
    """What K8sRunLauncher._launch_k8s_job_with_args builds for a run (same calls, no API request)."""
    launcher: K8sRunLauncher = instance.run_launcher
    run = _run(instance, "writer_job")
    context = launcher.get_container_context_for_run(run)
    job_config = context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher)
    name = get_job_name_from_run_id(run.run_id)
    return construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name=name,
        pod_name=name,
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )


def step_job_spec(instance: dg.DagsterInstance, step_tags: dict[str, str]) -> kubernetes.client.V1Job:
    """What K8sStepHandler.launch_step builds for a chunk-writer step: the executor is created by our
    Definitions' own executor (config mapping and all), its container context merged as launch_step does."""
    defs, _ = _k8s_defs()
    job_def = defs.resolve_job_def("writer_job")
    config = ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config
    executor = job_def.executor_def.executor_creation_fn(
        InitExecutorContext(
            job=InMemoryJob(job_def), executor_def=job_def.executor_def, executor_config=config, instance=instance
        )
    )
    handler = executor._step_handler  # the K8sStepHandler our executor_for("k8s") configured
    launcher: K8sRunLauncher = instance.run_launcher
    run = _run(instance, "writer_job")
    context = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(handler._executor_container_context)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    )
    job_config = context.get_k8s_job_config(handler._executor_image, launcher)
    job_config = job_config if job_config.job_image else job_config.with_image(IMAGE)
    name = "dagster-step-" + "0" * 32
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step", "{}"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": "mosaic_chunks"}],
    )
    job.metadata.namespace = context.namespace  # launch_step creates it in this namespace
    return job


def _as_v1job(job: kubernetes.client.V1Job) -> tuple[dict, kubernetes.client.V1Job]:
    """Serialized as the API would receive it, and deserialized back into the client's V1Job model."""
    api = kubernetes.client.ApiClient()
    body = api.sanitize_for_serialization(job)
    again = api._ApiClient__deserialize(json.loads(json.dumps(body)), "V1Job")
    assert isinstance(again, kubernetes.client.V1Job) and api.sanitize_for_serialization(again) == body
    return body, again


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    return float(number) * units[unit]


def _check_resources(resources: kubernetes.client.V1ResourceRequirements) -> None:
    assert resources.requests and resources.limits, "requests and limits are set together"
    assert set(resources.requests) == set(resources.limits)
    for name, request in resources.requests.items():
        assert _bytes(request) <= _bytes(resources.limits[name]), name


def _check_secrets_by_reference(body: dict, container: kubernetes.client.V1Container) -> None:
    text = json.dumps(body)
    assert not any(value in text for value in SECRETS_IN_ENV.values()), "a secret value is in the spec"
    refs = {source.secret_ref.name for source in container.env_from or [] if source.secret_ref}
    assert {"mosaic-object-store", "mosaic-stac-token"} <= refs
    literal = {e.name for e in container.env if e.value is not None}
    assert not literal & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "STAC_API_TOKEN", "DAGSTER_PG_PASSWORD"}
    pg = next(e for e in container.env if e.name == "DAGSTER_PG_PASSWORD")
    assert pg.value_from.secret_key_ref.name == "dagster-postgresql-secret"


def test_run_job_spec(k8s_instance: dg.DagsterInstance) -> None:
    body, job = _as_v1job(run_job_spec(k8s_instance))
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE and container.args[:3] == ["dagster", "api", "execute_run"]
    assert pod.service_account_name == chart_container_context(user_deployment())["k8s"]["service_account_name"]
    assert job.spec.ttl_seconds_after_finished == JOB_TTL_SECONDS and job.spec.backoff_limit == 0
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == 10001
    _check_resources(container.resources)
    _check_secrets_by_reference(body, container)
    env = {e.name: e.value for e in container.env}
    assert env["MOSAIC_EXECUTOR"] == "k8s" and env["MOSAIC_DATA_DIR"].startswith("s3://")
    assert env["AWS_S3_ENDPOINT"] in env["AWS_ENDPOINT_URL"]  # GDAL's and botocore's endpoint agree


def test_chunk_writer_step_job_spec(k8s_instance: dg.DagsterInstance) -> None:
    body, job = _as_v1job(step_job_spec(k8s_instance, chunk_writer_tags()))
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert job.metadata.namespace == NAMESPACE
    assert container.image == IMAGE and container.args[:3] == ["dagster", "api", "execute_step"]
    assert pod.service_account_name == chart_container_context(user_deployment())["k8s"]["service_account_name"]
    assert job.spec.ttl_seconds_after_finished == JOB_TTL_SECONDS
    # the writer's own shape replaced the code location's 1 CPU / 2 GiB (DEEP merge, both keys set)
    _check_resources(container.resources)
    assert container.resources.requests == container.resources.limits == writer_resources()["limits"]
    _check_secrets_by_reference(body, container)
    # one writer thread per CPU of the limit, sharing the GDAL caches worker_config derives from the pod's memory
    # limit: they stay inside the limit
    env = {e.name: e.value for e in container.env}
    limit_gib = _bytes(container.resources.limits["memory"]) / 2**30
    cpus = int(container.resources.limits["cpu"])
    assert float(env[MEMORY_ENV]) == limit_gib == WRITER_MEMORY_GB
    assert int(env[CPUS_ENV]) == cpus
    assert env[WRITERS_ENV] == "threads"
    for name, value in worker_config(limit_gib, threads=1).items():  # what the writers' process uses
        assert env[name] == value, name
    assert int(env["GDAL_CACHEMAX"]) + int(env["CPL_VSIL_CURL_CACHE_SIZE"]) < limit_gib * 2**30
    names = [e.name for e in container.env]
    assert len(names) == len(set(names)), "an env var set twice: Kubernetes keeps the last, silently"


def test_chunk_asset_carries_the_writer_tags() -> None:
    defs, chunks = _k8s_defs()
    tags = defs.resolve_assets_def(chunks).op.tags
    assert tags[K8S_CONFIG_TAG] == chunk_writer_tags()[K8S_CONFIG_TAG]


def test_executor_choice() -> None:
    assert executor_for({}) is dg.multiprocess_executor
    assert executor_for({"MOSAIC_EXECUTOR": "k8s"}).name == "mosaic_k8s"
    assert store_writes_pool({}) is None and store_writes_pool({"MOSAIC_EXECUTOR": "k8s"}) == STORE_WRITES_POOL
    with pytest.raises(ValueError, match="MOSAIC_EXECUTOR"):
        executor_for({"MOSAIC_EXECUTOR": "celery"})


def test_pool_limits_are_set_on_a_real_instance() -> None:
    with dg.instance_for_test() as instance:
        assert apply_pool_limits(instance) == POOL_LIMITS
        assert POOL_LIMITS[TEMPLATE_POOL] == 1


def test_cluster_dagster_yaml_is_valid_for_dagster(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))  # validates against Dagster's schema
    assert custom_class is None
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "postgres" in config["storage"]
    assert config["concurrency"]["pools"]["default_limit"] == POOL_LIMITS[TEMPLATE_POOL]
    ttl = launcher["config"]["run_k8s_config"]["job_spec_config"]["ttl_seconds_after_finished"]
    assert ttl == JOB_TTL_SECONDS
    # the validation bites: a wrong key is refused (so a pass above means something)
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text() + "\nrun_launcherr: {}\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


def test_helm_values_match_the_instance() -> None:
    values = helm_values()
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    deployment = user_deployment()
    assert values["dagster-user-deployments"]["enabled"] and deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "mosaic_assets.definitions"]
    assert {"mosaic-object-store", "mosaic-stac-token"} == {s["name"] for s in deployment["envSecrets"]}
    assert not any(e["name"] in SECRETS_IN_ENV or "SECRET" in e["name"] for e in deployment["env"])
    _check_resources(kubernetes.client.V1ResourceRequirements(**deployment["resources"]))
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    ttl = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"]["ttlSecondsAfterFinished"]
    assert ttl == JOB_TTL_SECONDS
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    concurrency = values["concurrency"]
    assert (
        concurrency["enabled"]
        and concurrency["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    )
    assert concurrency["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert values["global"]["postgresqlSecretName"] == instance["run_launcher"]["config"]["postgres_password_secret"]
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["generatePostgresqlPasswordSecret"] is False and "postgresqlPassword" not in values["postgresql"]


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_lints() -> None:
    instructions = _dockerfile()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: wheels built in one stage, copied into a clean one"
    final = instructions[stages[-1] :]
    for op, args in instructions:
        if op == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"COPY source {source} does not exist"
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final image runs as a non-root user"
    run_lines = " ".join(args for op, args in final if op == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get install|pip install)\b", run_lines)
    assert not any(op == "ENTRYPOINT" for op, _ in instructions), "Dagster passes full argv lists: no ENTRYPOINT"
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert cmd[:3] == ["dagster", "api", "grpc"]
    module = cmd[cmd.index("-m") + 1]
    assert importlib.util.find_spec(module) is not None
    assert isinstance(importlib.import_module(module).defs, dg.Definitions)
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert not {"mosaic_assets", "requirements", "specs", "pyproject.toml"} & set(ignored)


def test_cluster_instance_storage_works_on_postgres(stac_api: str, tmp_path: Path, monkeypatch) -> None:
    """deploy/dagster.yaml's ``storage`` section, as a run pod loads it, against a real PostgreSQL (the
    one under the test STAC API, in a database of its own): dagster-postgres is installed, the scheme
    picks the driver the image ships (SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is
    not installed: this test failed so before the scheme was set), the schema is created, a run's
    events land and a second instance reads them back."""
    import psycopg2

    storage = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["storage"]
    storage["postgres"]["postgres_db"]["port"] = {"env": "DAGSTER_PG_PORT"}  # the chart's is 5432
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    database, password = f"dagster_{os.getpid()}", os.environ.get("STAC_PG_PASSWORD", "stac")
    admin = psycopg2.connect(host="127.0.0.1", port=TEST_PG_PORT, user="postgres", password=password, dbname="postgres")
    admin.autocommit = True
    env = {"HOST": "127.0.0.1", "PORT": TEST_PG_PORT, "USER": "postgres", "PASSWORD": password, "DB": database}
    for name, value in env.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)

    @dg.asset
    def probe() -> int:
        return 1

    try:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")  # one a killed run left
            cur.execute(f"CREATE DATABASE {database}")
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__module__.startswith("dagster_postgres")
            result = dg.materialize([probe], instance=instance)
            assert result.success
        with dg.DagsterInstance.from_config(str(tmp_path)) as reader:
            event = reader.get_latest_materialization_event(dg.AssetKey("probe"))
            assert event is not None and event.run_id == result.run_id
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()
