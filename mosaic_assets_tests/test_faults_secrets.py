"""The STAC token never lands in Dagster's event log, compute logs, run config, metadata or exceptions,
not even when a misbehaving STAC server echoes the request's Authorization header into its error body.
(Object-store keys: test_s3.test_no_secret_in_any_object_event_or_log.)"""

from __future__ import annotations

import http.server
from pathlib import Path

import dagster as dg
import pytest

from mosaic_assets.defs.mosaic import build_mosaic_assets
from mosaic_assets.defs.resources import STAC_TOKEN_ENV, DataRootResource, StacApiResource
from mosaic_assets.engine.spec import parse_specs

from .conftest import LoadedScenes, spec_document
from .test_faults_stac import FaultyStac

pytestmark = pytest.mark.faults
TOKEN = "fake-stac-token-9f8e7d6c5b4a"


class EchoingStac(FaultyStac):
    """A proxy whose search answers 401 with the request headers (Authorization included) in the body."""

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        if self.fault == "echo" and request.path.startswith("/search"):
            request.rfile.read(int(request.headers.get("Content-Length") or 0))
            self.injected += 1
            body = f'{{"code": "Unauthorized", "request_headers": "{request.headers.as_string()!r}"}}'
            return self._reply(request, 401, body.encode())
        self.seen_tokens = getattr(self, "seen_tokens", set()) | {request.headers.get("Authorization", "")}
        return super().handle(request, method)


def _files_containing(folder: Path, secret: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.parametrize("fault", [None, "echo"])
def test_stac_token_is_in_no_event_log_compute_log_or_error(
    small_scenes: LoadedScenes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str | None
) -> None:
    proxy = EchoingStac(small_scenes.api)
    proxy.fault = fault
    monkeypatch.setenv(STAC_TOKEN_ENV, TOKEN)
    try:
        spec = parse_specs(spec_document(proxy.url))[0]
        mosaic, assets = build_mosaic_assets(spec)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        resources = {
            "stac_api": StacApiResource(url=proxy.url, token=dg.EnvVar(STAC_TOKEN_ENV)),
            "data_root": DataRootResource(path=str(tmp_path / "data")),
        }
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            instance.add_dynamic_partitions(mosaic.partitions.time.name, ["2024-06-01"])
            result = dg.materialize(
                assets,
                selection=[mosaic.catalog],
                partition_key="2024-06-01",
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            if fault == "echo":
                assert not result.success and proxy.injected >= 1, "the server really echoed the header"
                error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
                assert "Unauthorized" in error and TOKEN not in error and "Bearer ***" in error
            else:
                assert result.success and f"Bearer {TOKEN}" in proxy.seen_tokens, "the token was really sent"
            records = instance.get_records_for_run(result.run_id).records
            assert not [r for r in records if TOKEN in str(r.event_log_entry)]
            assert TOKEN not in str(instance.get_run_by_id(result.run_id).run_config)
        assert not _files_containing(home, TOKEN.encode()), "no file of the instance (event log, compute logs)"
        assert not _files_containing(tmp_path / "data", TOKEN.encode())
    finally:
        proxy.stop()


def test_stac_sensor_skip_reason_never_holds_the_token(
    small_scenes: LoadedScenes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor's tick, when the STAC server echoes the Authorization header into its error: skipped with
    the server's complaint, the token replaced by ***, the cursor kept."""
    from mosaic_assets.defs.sensors import build_stac_sensor

    proxy = EchoingStac(small_scenes.api)
    proxy.fault = "echo"
    monkeypatch.setenv(STAC_TOKEN_ENV, TOKEN)
    try:
        spec = parse_specs(spec_document(proxy.url))[0]
        mosaic, _ = build_mosaic_assets(spec)
        sensor = build_stac_sensor(mosaic)
        resources = {"stac_api": StacApiResource(url=proxy.url, token=dg.EnvVar(STAC_TOKEN_ENV))}
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            context = dg.build_sensor_context(instance=instance, resources=resources, cursor=None)
            result = sensor(context)
        assert proxy.injected >= 1, "the server really echoed the header"
        assert isinstance(result, dg.SkipReason), result
        reason = result.skip_message or ""
        assert "Unauthorized" in reason and "***" in reason, reason
        assert TOKEN not in reason
        assert context.cursor is None, "the cursor did not move"
    finally:
        proxy.stop()
