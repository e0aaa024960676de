"""``stac.modifier`` against a real server that refuses unsigned and expired hrefs (nginx ``secure_link``,
scripts/signed_http_server.sh): a partition written after its catalog's tokens expired still reads
(the writer signs again), pixels equal GDAL's warp of the same files, and no token reaches a scene
table, GTI, event, log or file under the data root and DAGSTER_HOME."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.bandgroups import read_groups
from mosaic_assets.engine.catalog import CatalogError, open_client, scene_table, search_time_step
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import GtiFiles, build_gti
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.store import ensure_template
from mosaic_assets.engine.writer import write_block

from .catalog_fixtures import CatalogFixture, make_fixture
from .conftest import dagster_env, reset_collection, run_build
from .pixels import assert_matches_gdal_warp
from .signed_http import signed_http_factory  # noqa: F401  (pytest fixture)

COLLECTION = "signed-s2"
SIGNER = "mosaic_assets_tests.signer:sign_inplace"
TTL_SECONDS = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, signed_http_factory, stac_api: str):  # noqa: F811
    """The Planetary Computer-shaped fixture, its files behind the signing server, its items (hrefs on
    that server, unsigned) in the STAC API."""
    root = tmp_path_factory.mktemp("signed")
    fixture = make_fixture("pc_s2_l2a", root)
    server = signed_http_factory(root)
    items = copy.deepcopy(fixture.items)
    for item in items:
        item["collection"] = COLLECTION
        for key, asset in item["assets"].items():
            if key in fixture.files[item["id"]]:
                asset["href"] = server.href(Path(fixture.files[item["id"]][key]).relative_to(root))
    reset_collection(stac_api, COLLECTION)
    upsert_collection(stac_api, {**fixture.collection_doc, "id": COLLECTION})
    upsert_items(stac_api, COLLECTION, items)
    return fixture, server, items


def _spec_document(api: str, fixture: CatalogFixture) -> dict:
    return {
        "mosaics": [
            {
                "name": "signed",
                "stac": {"url": api, "collections": [COLLECTION], "modifier": SIGNER},
                "bands": fixture.bands,
                "area": {"bbox": list(fixture.area_native), "crs": fixture.native_crs},
                "crs": fixture.native_crs,
                "resolution": fixture.native_resolution,
                "time": {"start": fixture.items[0]["properties"]["datetime"][:10], "step": "daily"},
                "chunks": {"y": 256, "x": 256},
                "partition_bytes": "4MiB",
            }
        ]
    }


def _tokens_in(folder: Path, server) -> list[str]:
    """Files under ``folder`` holding a token parameter or the server's secret."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if b"md5=" in data or b"expires=" in data or server.secret.encode() in data:
                found.append(str(path))
    return found


def test_writer_signs_again_after_the_catalogs_tokens_expired(
    served, stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture, server, items = served
    calls = tmp_path / "calls.txt"
    for key, value in server.signer_env(ttl=TTL_SECONDS, calls=calls).items():
        monkeypatch.setenv(key, value)
    spec = parse_specs(_spec_document(stac_api, fixture))[0]
    grid = MosaicGrid.from_spec(spec)
    step = spec.time.start.isoformat()
    table = search_time_step(spec, open_client(stac_api), step, stac_api)
    signed_at_catalog = len(calls.read_text().splitlines())
    assert signed_at_catalog >= len(table) >= 2, "the catalog step signs every item (and proves the signer works)"
    files = GtiFiles.for_step(tmp_path / "data" / "gti", step)
    build_gti(spec, grid, table, files)
    store = str(tmp_path / "data" / "store.zarr")
    ensure_template(spec, grid, store, 1)
    time.sleep(TTL_SECONDS + 1.1)  # every token the catalog step made is now refused (410)
    written = [write_block(spec, grid, store, files, 0, b) for b in grid.blocks()]
    assert sum(r.valid_pixels for r in written) > 10_000
    assert len(calls.read_text().splitlines()) > signed_at_catalog, "the writer signed again"
    statuses = {r["status"] for r in server.requests()}
    assert "206" in statuses or "200" in statuses
    for group in read_groups(spec):
        local = {i: fixture.files[i][group.asset] for i in table["item_id"]}
        assert_matches_gdal_warp(
            spec, grid, store, 0, table, tmp_path / f"ref{group.number}", local, positions=list(group.positions)
        )
    assert table["hrefs"].str.contains("md5=").sum() == 0
    assert not _tokens_in(tmp_path / "data", server)


def test_no_token_reaches_dagster(served, stac_api: str, tmp_path: Path) -> None:
    """The same mosaic built through Dagster (the demo's command): every event, log and file under the
    data root and DAGSTER_HOME is free of tokens and of the secret."""
    fixture, server, _ = served
    env = dagster_env(tmp_path, _spec_document(stac_api, fixture), stac_api)
    env.update(server.signer_env(ttl=TTL_SECONDS, calls=tmp_path / "calls.txt"))
    proc = run_build(env)
    assert "md5=" not in proc.stdout + proc.stderr
    assert not _tokens_in(tmp_path / "dagster_home", server)
    assert not _tokens_in(tmp_path / "data", server)


def test_a_modifier_that_fails_is_named_and_nothing_is_written(served, tmp_path: Path) -> None:
    fixture, _, items = served
    document = _spec_document("http://127.0.0.1:1", fixture)
    document["mosaics"][0]["stac"]["modifier"] = "no_such_package.signing:sign"
    with pytest.raises(CatalogError, match=r"stac.modifier: 'no_such_package.signing:sign': module"):
        scene_table(parse_specs(document)[0], items)
    document["mosaics"][0]["stac"]["modifier"] = SIGNER  # no secret in the environment: it raises
    with pytest.raises(CatalogError, match=rf"failed on item '{items[0]['id']}'"):
        scene_table(parse_specs(document)[0], items)
