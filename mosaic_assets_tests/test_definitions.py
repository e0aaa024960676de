"""The Dagster definitions load and have the shape the design promises, for every declared mosaic."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from mosaic_assets.definitions import build_definitions

from .conftest import spec_document


def test_each_mosaic_yields_its_own_partitioned_graph(tmp_path: Path) -> None:
    doc = spec_document("http://127.0.0.1:1")
    second = dict(doc["mosaics"][0], name="other", chunks={"y": 512, "x": 512}, partition_bytes="8MiB")
    doc["mosaics"].append(second)
    path = tmp_path / "specs.yaml"
    path.write_text(yaml.safe_dump(doc))
    defs = build_definitions(path)
    graph = defs.resolve_asset_graph()
    for name in ("testmosaic", "other"):
        keys = {k.to_user_string() for k in graph.get_all_asset_keys() if k.path[0] == name}
        assert keys == {
            f"{name}/{a}" for a in ("scene_catalog", "gti_index", "zarr_template", "mosaic_chunks", "preview")
        }
        chunks = graph.get(dg.AssetKey([name, "mosaic_chunks"])).partitions_def
        assert isinstance(chunks, dg.MultiPartitionsDefinition)
        dims = {d.name: d.partitions_def for d in chunks.partitions_defs}
        assert isinstance(dims["time"], dg.DynamicPartitionsDefinition) and dims["time"].name == f"{name}_time"
        assert isinstance(dims["xy"], dg.StaticPartitionsDefinition)
        catalog = graph.get(dg.AssetKey([name, "scene_catalog"])).partitions_def
        assert catalog == dims["time"]
        parents = graph.get(dg.AssetKey([name, "mosaic_chunks"])).parent_keys
        assert parents == {dg.AssetKey([name, "gti_index"]), dg.AssetKey([name, "zarr_template"])}
    assert set(defs.resources) == {"stac_api", "data_root"}


def test_stac_token_is_an_env_var_not_a_value(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STAC_API_TOKEN", "s3cr3t-token-value")
    path = tmp_path / "specs.yaml"
    path.write_text(yaml.safe_dump(spec_document("http://127.0.0.1:1")))
    defs = build_definitions(path)
    token = defs.resources["stac_api"].token
    assert isinstance(token, dg.EnvVar) and token.env_var_name == "STAC_API_TOKEN"


def test_build_batches_only_consecutive_keys() -> None:
    from mosaic_assets.run import contiguous_batches

    ordered = [f"k{i}" for i in range(10)]
    batches = contiguous_batches(["k7", "k1", "k2", "k3", "k5", "k6", "k9"], ordered, size=2)
    assert batches == [["k1", "k2"], ["k3"], ["k5", "k6"], ["k7"], ["k9"]]
    assert contiguous_batches([], ordered, size=4) == []


def test_build_batches_are_exactly_what_dagster_runs_for_their_range() -> None:
    """A ranged run of a multi-partitioned asset covers [first..last] of each dimension, so the batches
    ``run build`` makes of two time steps must each stay within one step."""
    from mosaic_assets.defs.mosaic import MosaicPartitions, build_mosaic_assets
    from mosaic_assets.engine.spec import parse_specs
    from mosaic_assets.run import contiguous_batches

    mosaic, _ = build_mosaic_assets(parse_specs(spec_document("http://127.0.0.1:1"))[0])
    parts = mosaic.partitions
    steps = ["2024-06-01", "2024-06-02"]
    blocks = parts.blocks.get_partition_keys()
    # the last blocks of one step and the first of the next: consecutive keys, across a step boundary
    keys = [str(parts.chunk_key(s, b)) for s, bs in ((steps[0], blocks[-4:]), (steps[1], blocks[:4])) for b in bs]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(parts.time.name, steps)
        ordered = parts.chunks.get_partition_keys(dynamic_partitions_store=instance)
        batches = contiguous_batches(keys, ordered, 8, group=lambda k: MosaicPartitions.split_chunk_key(k)[0])
        assert len(batches) == 2
        for batch in batches:
            ranged = parts.chunks.get_partition_keys_in_range(
                dg.PartitionKeyRange(batch[0], batch[-1]), dynamic_partitions_store=instance
            )
            assert sorted(map(str, ranged)) == sorted(batch)
