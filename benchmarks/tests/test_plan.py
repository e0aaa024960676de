"""The plan's figures follow from MosaicGrid, and the continental example gets told what to change."""

from pathlib import Path

from benchmarks.plan import DataAssumptions, plan
from mosaic_assets.engine.grid import MosaicGrid
from mosaic_assets.engine.spec import load_specs

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent


def test_demo_spec_fits_and_counts_follow_the_grid():
    spec = load_specs(REPO / "specs" / "demo.yaml")[0]  # the daily mosaic (demo_median is the second)
    grid = MosaicGrid.from_spec(spec)
    p = plan(spec, DataAssumptions(years=1))
    blocks = grid.block_grid[0] * grid.block_grid[1]
    assert p.blocks == blocks
    assert p.partitions["mosaic_chunks"] == p.time_steps * blocks
    assert p.chunks_written == p.time_steps * grid.chunk_grid[0] * grid.chunk_grid[1]
    assert p.fits_partition_ceiling and p.fits_concurrency_ceiling
    assert p.advice == ["the defaults fit: no change needed."]


def test_continental_monthly_mosaic_fits_and_counts_ranged_runs():
    (spec,) = load_specs(HERE / "specs" / "europe_monthly.yaml")
    p = plan(spec, DataAssumptions(years=10, scenes_per_step=11000, scene_px=10980, scene_tile_px=1024))
    assert p.time_steps == 120
    assert p.fits_partition_ceiling  # partition_bytes 4GiB
    per_run = spec.operations.partitions_per_run
    assert p.chunk_runs_touched == 120 * -(-p.blocks // per_run)  # coverage 1.0: every block
    assert p.writer_pod_hours > 0 and p.cost_usd > 0 and p.puts_per_s > 0
    assert p.object_store_gets > 0 and p.gti_bytes_per_step > 0


def test_default_partitions_are_told_what_to_change():
    (spec,) = load_specs(HERE / "specs" / "europe_monthly.yaml")
    spec = spec.model_copy(update={"partition_bytes": 256 * 2**20})
    p = plan(spec, DataAssumptions(years=10))
    assert not p.fits_partition_ceiling
    assert any("partition_bytes" in a for a in p.advice)
