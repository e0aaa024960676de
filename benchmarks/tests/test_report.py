"""Ratios are taken within each repeat, then the median; targets are flagged, not timed here."""

from benchmarks.report import method_figures, ratios, table


def _runs(*walls: float) -> list[dict]:
    return [
        {"work_s": w, "work_cpu_s": 2 * w, "peak_rss_mb": 100.0, "process_wall_s": w + 1, "extra": {}} for w in walls
    ]


def test_ratio_is_the_median_of_same_run_ratios():
    methods = {
        "engine": method_figures(_runs(10, 20, 30), output_mpx=100),
        "floor": method_figures(_runs(10, 10, 10), output_mpx=100),
    }
    r = ratios(methods)["engine/floor"]
    assert r["value"] == 2.0 and r["met"] is False
    assert methods["engine"]["mpix_per_s"] == 100 / 20


def test_table_renders_every_method():
    doc = {
        "methods": {"engine": method_figures(_runs(1, 2, 3), 10)},
        "ratios": {},
        "equality": {},
        "dataset": {
            "size": "quick",
            "scenes": 1,
            "scene_size": 8,
            "bands": 1,
            "dtype": "uint16",
            "time_steps": 1,
            "grid_shape": [8, 8],
            "output_mpx": 1,
            "source_mpx": 1,
            "partitions": 1,
            "block_shape": [8, 8],
            "repeats": 3,
        },
        "machine": {"cores": 2},
    }
    assert "engine" in table(doc)
