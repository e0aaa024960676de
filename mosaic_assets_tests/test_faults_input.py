"""Bad and hostile input: hrefs outside the allowlist, ids that could pass for paths, broken
geometry and absurd specs are refused (with a reason naming the item / key) before GDAL or the
store sees them."""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path

import dagster as dg
import pytest

from mosaic_assets.demo.stac_load import upsert_items
from mosaic_assets.engine.catalog import CatalogError, HrefPolicy, gdal_path, resolved_ips, scene_table
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.gti import GtiFiles, build_gti
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.spec import SpecError, parse_specs

from .conftest import COLLECTION, REPO, LoadedScenes, spec_document

pytestmark = pytest.mark.faults

REMOTE = HrefPolicy(local_catalog=False)
LOCAL = HrefPolicy(local_catalog=True)


@pytest.mark.parametrize(
    "href, policy, why",
    [
        ("file:///etc/passwd", REMOTE, "local file named by a remote catalog"),
        ("/etc/passwd", REMOTE, "local file named by a remote catalog"),
        ("http://127.0.0.1:8080/a.tif", REMOTE, "private or loopback host"),
        ("https://10.1.2.3/a.tif", REMOTE, "private or loopback host"),
        ("http://localhost/a.tif", REMOTE, "private or loopback host"),
        ("http://169.254.169.254/latest/meta-data/iam/", LOCAL, "link-local / cloud metadata"),
        ("http://[fe80::1]/a.tif", LOCAL, "link-local / cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", LOCAL, "link-local / cloud metadata"),
        ("/vsicurl/http://169.254.169.254/latest/", LOCAL, "GDAL virtual path"),
        ("/data/a.tif?bands=1&ovr=0", LOCAL, "GDAL virtual path"),
        ("/data/scenes/../../etc/passwd", LOCAL, "'..' path segments"),
        ("https://host/scenes/%2e%2e/secret.tif", LOCAL, "'..' path segments"),
        ("/data/a.tif\x00.png", LOCAL, "control characters"),
        ("file://otherhost/share/a.tif", LOCAL, "file URL on another host"),
        ("https://evil.example.com/a.tif", HrefPolicy(("https://good.example.com/scenes/",)), "outside stac.allowed"),
        ("/home/user/a.tif", HrefPolicy(("/data/scenes/",)), "outside stac.allowed"),
        ("/data/scenes-other/a.tif", HrefPolicy(("/data/scenes",)), "outside stac.allowed"),
    ],
)
def test_hostile_hrefs_are_refused_with_a_reason(href: str, policy: HrefPolicy, why: str) -> None:
    with pytest.raises(CatalogError, match=re.escape("item item-1: ") + ".*" + re.escape(why)):
        gdal_path(href, "item-1", policy)


@pytest.mark.parametrize(
    "href, policy, expected",
    [
        ("https://stac.example.com/scenes/a.tif", REMOTE, "/vsicurl/https://stac.example.com/scenes/a.tif"),
        ("/data/scenes/a.tif", HrefPolicy(("/data/scenes/",), local_catalog=False), "/data/scenes/a.tif"),
        ("s3://bucket/scenes/a.tif", HrefPolicy(("s3://bucket/scenes/",)), "/vsis3/bucket/scenes/a.tif"),
        ("http://127.0.0.1:9000/a.tif", LOCAL, "/vsicurl/http://127.0.0.1:9000/a.tif"),
    ],
)
def test_allowed_hrefs_still_map(href: str, policy: HrefPolicy, expected: str) -> None:
    assert gdal_path(href, "item-1", policy) == expected


def test_a_name_that_resolves_inside_is_refused_from_a_remote_catalog() -> None:
    """DNS rebinding / split horizon: a host name that is not "localhost" but resolves (through this
    machine's real resolver, /etc/hosts) to a loopback or private address is refused from a remote
    catalog, and still allowed from a local one."""
    candidates = [socket.gethostname(), socket.getfqdn(), "ip6-loopback", "localhost6"]
    inside = [h for h in candidates if h != "localhost" and any(not a.is_global for a in resolved_ips(h))]
    if not inside:
        pytest.skip(f"none of {candidates} resolves to a private or loopback address on this machine")
    host = inside[0]
    href = f"http://{host}:8080/scenes/a.tif"
    with pytest.raises(CatalogError, match=f"item item-1: href .*host '{re.escape(host)}' resolves to private"):
        gdal_path(href, "item-1", REMOTE)
    assert gdal_path(href, "item-1", LOCAL) == f"/vsicurl/{href}"
    assert gdal_path(href, "item-1", HrefPolicy((f"http://{host}:8080/scenes/",), local_catalog=False))


def test_an_unresolvable_name_is_not_mistaken_for_a_private_one() -> None:
    assert resolved_ips("no-such-host.invalid") == ()
    assert gdal_path("https://no-such-host.invalid/a.tif", "item-1", REMOTE).startswith("/vsicurl/")


def test_catalog_counts_as_remote_by_its_url_not_its_self_link(small_scenes: LoadedScenes) -> None:
    spec = parse_specs(spec_document(small_scenes.api))[0]
    assert HrefPolicy.for_spec(spec).local_catalog  # the test API is on 127.0.0.1
    assert not HrefPolicy.for_spec(spec, "https://earth-search.example.com/v1").local_catalog


def test_allowed_prefixes_are_validated() -> None:
    for bad in (["relative/"], ["https://host"], ["/data/../etc/"]):
        with pytest.raises(SpecError, match="allowed_href_prefixes"):
            parse_specs(
                spec_document(
                    "http://127.0.0.1:1", stac={"url": "http://x", "collections": ["c"], "allowed_href_prefixes": bad}
                )
            )


@pytest.mark.parametrize("item_id", ["../../etc/cron.d/x", "a/b", "a\\b", "x\x00y", "line\nbreak", "..", ""])
def test_item_ids_that_could_be_paths_are_refused(small_scenes: LoadedScenes, item_id: str) -> None:
    item = copy.deepcopy(small_scenes.items[0])
    item["id"] = item_id
    with pytest.raises(CatalogError, match="id"):
        scene_table(parse_specs(spec_document(small_scenes.api))[0], [item])


def test_hostile_asset_keys_never_reach_a_path(small_scenes: LoadedScenes, tmp_path: Path) -> None:
    """Asset (band) keys like ``../../x`` or with NUL are only ever looked up, never joined into a path: the
    scene table keeps just the spec's asset, and the GTI built from it lands in its own folder."""
    spec = parse_specs(spec_document(small_scenes.api))[0]
    item = copy.deepcopy(small_scenes.items[0])
    good = item["assets"]["data"]
    for key in ("../../escape", "/abs/escape", "a\x00b", "line\nbreak", ".."):
        item["assets"][key] = {**good, "href": good["href"]}
    table = scene_table(spec, [item])
    assert list(json.loads(table["hrefs"].iloc[0])) == ["data"]
    work = tmp_path / "work" / "gti"
    build_gti(spec, MosaicGrid.from_spec(spec), table, GtiFiles.for_step(work, "2024-06-01"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "work/gti/2024-06-01.gpkg",
        "work/gti/2024-06-01.gti",
    ]


@pytest.mark.parametrize(
    "geometry, why",
    [
        (None, "has no geometry"),
        ({"type": "Polygon", "coordinates": []}, "geometry is empty"),
        ({"type": "Polygon", "coordinates": [[[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]]}, "antimeridian"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 100], [0, 0]]]}, "outside lon/lat range"),
        ({"type": "Polygon", "coordinates": "nonsense"}, "geometry is malformed"),
    ],
)
def test_bad_geometry_is_refused_with_a_reason(small_scenes: LoadedScenes, geometry: dict | None, why: str) -> None:
    item = copy.deepcopy(small_scenes.items[0])
    item["geometry"] = geometry
    with pytest.raises(CatalogError, match=re.escape(f"item {item['id']}: ") + ".*" + re.escape(why)):
        scene_table(parse_specs(spec_document(small_scenes.api))[0], [item])


def test_invalid_but_repairable_geometry_is_repaired(small_scenes: LoadedScenes) -> None:
    item = copy.deepcopy(small_scenes.items[0])
    (x0, y0, x1, y1) = item["bbox"]
    item["geometry"] = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]]}
    table = scene_table(parse_specs(spec_document(small_scenes.api))[0], [item])
    assert table.geometry.iloc[0].is_valid and not table.geometry.iloc[0].is_empty


def test_hostile_item_in_the_real_catalog_fails_its_partition_before_gdal(
    small_scenes: LoadedScenes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile item POSTed to the real STAC API: the catalog partition fails naming it, no scene table
    (hence no GTI, no GDAL open) is written, and the item is removed again for the other tests."""
    from mosaic_assets.defs.mosaic import build_mosaic_assets
    from mosaic_assets.defs.resources import DataRootResource, StacApiResource

    scenes_dir = str(small_scenes.scenes[0].path.parent)
    doc = spec_document(
        small_scenes.api,
        stac={"url": small_scenes.api, "collections": [COLLECTION], "allowed_href_prefixes": [scenes_dir + "/"]},
    )
    spec = parse_specs(doc)[0]
    hostile = copy.deepcopy(small_scenes.items[0])
    hostile["id"] = "zz-hostile-passwd"
    hostile["assets"]["data"]["href"] = "file:///etc/passwd"
    upsert_items(small_scenes.api, COLLECTION, [hostile])
    try:
        mosaic, assets = build_mosaic_assets(spec)
        data = tmp_path / "data"
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(mosaic.partitions.time.name, ["2024-06-01"])
            result = dg.materialize(
                assets,
                selection=[mosaic.catalog],
                partition_key="2024-06-01",
                instance=instance,
                resources={"stac_api": StacApiResource(), "data_root": DataRootResource(path=str(data))},
                raise_on_error=False,
            )
            assert not result.success
            failure = result.get_step_failure_events()[0].step_failure_data.error
            text = failure.to_string()
            assert "item zz-hostile-passwd" in text and "/etc/passwd" in text and "allowed_href_prefixes" in text
        assert not Path(MosaicLayout(spec, data).scene_table("2024-06-01")).exists()
    finally:
        import requests

        requests.delete(f"{small_scenes.api}/collections/{COLLECTION}/items/zz-hostile-passwd", timeout=30)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"resolution": 0.05}, "TiB uncompressed (limit 1024 TiB)"),  # the test area at 5 cm: ~1,300 TiB
        ({"chunks": {"y": 128, "x": 128}, "partition_bytes": "128KiB"}, "chunk partitions"),  # 81 blocks x 3,660 days
        (
            {"area": {"bbox": [-25.0, 34.0, 45.0, 72.0], "crs": "EPSG:4326"}, "crs": "EPSG:3035"},
            "Dagster holds ~100,000 per asset",
        ),
    ],
)
def test_absurd_mosaic_is_refused_with_its_estimate_before_any_partition_exists(overrides: dict, expected: str) -> None:
    from mosaic_assets.defs.mosaic import build_mosaic_assets

    spec = parse_specs(spec_document("http://127.0.0.1:1", **overrides))[0]
    with pytest.raises(SpecError, match=re.escape(expected)) as refused:
        build_mosaic_assets(spec)
    assert "allow_huge: true" in str(refused.value) and "over 10 years" in str(refused.value)


@pytest.mark.parametrize("example", ["europe_monthly.yaml", "land_yearly.yaml"])
def test_continental_examples_load_without_allow_huge_under_the_partition_ceiling(example: str) -> None:
    """The planner's examples (Europe monthly and the land surface yearly, 10 m, ten years) with the
    settings documented for that scale: Dagster's definitions build, under 100k chunk partitions."""
    from mosaic_assets.defs.mosaic import build_mosaic_assets
    from mosaic_assets.engine.grid import MAX_PARTITIONS_PER_ASSET, MosaicGrid, check_size
    from mosaic_assets.engine.spec import load_specs

    (spec,) = load_specs(REPO / "benchmarks" / "specs" / example)
    assert not spec.allow_huge
    estimate = check_size(spec, MosaicGrid.from_spec(spec))
    assert estimate.partitions < MAX_PARTITIONS_PER_ASSET, estimate
    build_mosaic_assets(spec)


def test_allow_huge_lets_an_intended_big_mosaic_through() -> None:
    from mosaic_assets.engine.grid import MosaicGrid, check_size

    doc = spec_document("http://127.0.0.1:1", chunks={"y": 128, "x": 128}, partition_bytes="128KiB", allow_huge=True)
    spec = parse_specs(doc)[0]
    estimate = check_size(spec, MosaicGrid.from_spec(spec))
    assert estimate.partitions > 100_000
