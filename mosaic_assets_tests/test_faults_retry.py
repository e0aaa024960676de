"""Transient vs deterministic errors through Dagster's RetryPolicy, against a real HTTP server on loopback:
a scene URL answering 503 for a while is retried (step up for retry, then success); a truncated scene
fails at once, without a retry. And GDAL's own HTTP retries stay bounded."""

from __future__ import annotations

import copy
import functools
import http.server
import threading
from pathlib import Path

import dagster as dg
import pytest

from mosaic_assets.defs.mosaic import TRANSIENT_RETRY, MosaicPartitions, build_mosaic_assets
from mosaic_assets.defs.resources import DataRootResource, StacApiResource
from mosaic_assets.demo.scenes import collection_document
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.catalog import scene_table
from mosaic_assets.engine.gdal_env import worker_config
from mosaic_assets.engine.planner import blocks_with_scenes
from mosaic_assets.engine.spec import parse_specs

from .conftest import reset_collection, spec_document
from .test_faults_scenes import FAULT_COLLECTION, QuietHandler, _items, _truncate
from .test_faults_scenes import pristine as pristine  # noqa: F401  (the fixture)

pytestmark = pytest.mark.faults


class FlakyHandler(QuietHandler):
    """Answers 503 to the first ``failures`` requests for ``flaky_name``, then serves it normally."""

    flaky_name = ""
    failures = 0
    served_503 = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            flaky = self.path.endswith(type(self).flaky_name) and type(self).served_503 < type(self).failures
            if flaky:
                type(self).served_503 += 1
        if flaky:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    do_HEAD = do_GET


@pytest.fixture()
def flaky_server(tmp_path: Path):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("Flaky", (FlakyHandler,), {"served_503": 0, "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _graph(stac_api: str, items: list[dict], tmp: Path, instance: dg.DagsterInstance):
    reset_collection(stac_api, FAULT_COLLECTION)
    upsert_collection(stac_api, collection_document(FAULT_COLLECTION, items))
    upsert_items(stac_api, FAULT_COLLECTION, copy.deepcopy(items))
    spec = parse_specs(spec_document(stac_api, stac={"url": stac_api, "collections": [FAULT_COLLECTION]}))[0]
    mosaic, assets = build_mosaic_assets(spec)
    resources = {"stac_api": StacApiResource(), "data_root": DataRootResource(path=str(tmp / "data"))}
    instance.add_dynamic_partitions(mosaic.partitions.time.name, ["2024-06-01"])
    for key, partition in ((mosaic.catalog, "2024-06-01"), (mosaic.gti, "2024-06-01"), (mosaic.template, None)):
        dg.materialize(assets, selection=[key], partition_key=partition, instance=instance, resources=resources)
    table = scene_table(spec, items)
    block = sorted(b.key for b in blocks_with_scenes(mosaic.grid, table[table["item_id"] == items[0]["id"]]))[0]

    def run_block() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets,
            selection=[mosaic.chunks],
            partition_key=MosaicPartitions.chunk_key("2024-06-01", block),
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )

    return run_block


def _event_types(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_type_value for e in result.all_events]


def test_transient_503_is_retried_with_backoff_then_lands(
    pristine: list, stac_api: str, flaky_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base, handler = flaky_server
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")  # let the 503 reach Dagster at once (GDAL retries first otherwise)
    items = _items(pristine, folder, base_href=base)
    try:
        with dg.instance_for_test() as instance:
            run_block = _graph(stac_api, items, tmp_path, instance)
            handler.flaky_name, handler.failures = pristine[0].path.name, 1
            result = run_block()
            assert handler.served_503 == 1, "the fault was injected"
            assert result.success, [
                e.step_failure_data.error.to_string()[-800:] for e in result.get_step_failure_events()
            ]
            assert _event_types(result).count("STEP_UP_FOR_RETRY") == 1
            assert TRANSIENT_RETRY.max_retries >= 1 and TRANSIENT_RETRY.jitter and TRANSIENT_RETRY.backoff
    finally:
        reset_collection(stac_api, FAULT_COLLECTION)


def test_truncated_scene_fails_at_once_without_retry(
    pristine: list, stac_api: str, flaky_server, tmp_path: Path
) -> None:
    folder, base, _ = flaky_server
    items = _items(pristine, folder, base_href=base)
    try:
        with dg.instance_for_test() as instance:
            run_block = _graph(stac_api, items, tmp_path, instance)
            _truncate(0.5)(folder / pristine[0].path.name)
            result = run_block()
            assert not result.success
            types = _event_types(result)
            assert "STEP_UP_FOR_RETRY" not in types and types.count("STEP_FAILURE") == 1
            error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
            assert f"item {items[0]['id']}" in error and pristine[0].path.name in error
    finally:
        reset_collection(stac_api, FAULT_COLLECTION)


def test_gdal_http_retries_are_bounded() -> None:
    """GDAL backs off exponentially (measured ~x2 per retry): the writer's worst case stays around a minute."""
    config = worker_config(2)
    retries, delay = int(config["GDAL_HTTP_MAX_RETRY"]), float(config["GDAL_HTTP_RETRY_DELAY"])
    worst = sum(delay * 2.5**k for k in range(retries))
    assert 1 <= retries and worst <= 120, worst
