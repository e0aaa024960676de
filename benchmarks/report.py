"""Turn the runs into the figures: medians per method, in-run ratios against the targets, the JSON
document (benchmarks/results/latest.json) and the printed table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# (ratio name, numerator, denominator, target, comparison): "le" means the ratio must be <= target.
RATIOS = (
    ("engine/floor", "engine", "floor", 1.15, "le"),
    ("engine/gdal", "engine", "gdal", 1.0, "lt"),
    ("engine/odc_stac", "engine", "odc_stac", 0.4, "le"),
    ("dagster/engine_pipeline", "dagster", "engine_pipeline", 1.15, "le"),
    ("dagster_postgres/engine_pipeline", "dagster_postgres", "engine_pipeline", 1.15, "le"),
    ("dagster/engine", "dagster", "engine", None, None),
)
METRICS = ("wall_s", "cpu_s", "mpix_per_s", "peak_rss_mb", "process_wall_s")


def method_figures(runs: list[dict], output_mpx: float) -> dict:
    """Median of each metric over the repeats; ``wall_s``/``cpu_s`` are the timed work."""
    per_run = [
        {
            "wall_s": r["work_s"],
            "cpu_s": r["work_cpu_s"],
            "mpix_per_s": output_mpx / r["work_s"],
            "peak_rss_mb": r["peak_rss_mb"],
            "process_wall_s": r["process_wall_s"],
            "load_1m_before": r.get("load_1m_before"),
        }
        for r in runs
    ]
    return {**{m: statistics.median(r[m] for r in per_run) for m in METRICS}, "runs": per_run}


def ratios(methods: dict[str, dict]) -> dict[str, dict]:
    """Median over repeats of the same repeat's ratio (noisy machine: a repeat's ratio is the figure)."""
    out = {}
    for name, num, den, target, how in RATIOS:
        if num not in methods or den not in methods:
            continue
        pairs = zip(methods[num]["runs"], methods[den]["runs"])
        value = statistics.median(a["wall_s"] / b["wall_s"] for a, b in pairs)
        met = None if target is None else (value <= target if how == "le" else value < target)
        out[name] = {"value": round(value, 3), "target": target, "met": met}
    return out


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    packages = {}
    for name in ("rasterio", "zarr", "numcodecs", "xarray", "dask", "odc-stac", "odc-geo", "dagster"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    import rasterio

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
        "packages": packages,
    }


def git_state() -> dict:
    """The commit measured, and whether the work tree differed from it (the engine may be changing)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "mosaic_assets").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "engine_files_changed": dirty}


def write_json(document: dict, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, default=str) + "\n")


def _flag(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


def table(doc: dict) -> str:
    """The human-readable summary of a results document."""
    d = doc["dataset"]
    lines = [
        f"size {d['size']}: {d['scenes']} scenes {d['scene_size']}² x {d['bands']} bands {d['dtype']}, "
        f"{d['time_steps']} time steps, grid {d['grid_shape'][0]}x{d['grid_shape'][1]} "
        f"({d['output_mpx']:.0f} Mpx out, {d['source_mpx']:.0f} Mpx in), {d['partitions']} partitions of "
        f"{d['block_shape'][0]}x{d['block_shape'][1]} px, {doc['machine']['cores']} cores, "
        f"medians of {d['repeats']} runs",
        "",
        f"{'method':<16}{'wall s':>9}{'cpu s':>9}{'Mpx/s':>9}{'peak RSS MB':>13}{'process s':>11}",
    ]
    for name, m in doc["methods"].items():
        lines.append(
            f"{name:<16}{m['wall_s']:>9.2f}{m['cpu_s']:>9.2f}{m['mpix_per_s']:>9.1f}"
            f"{m['peak_rss_mb']:>13.0f}{m['process_wall_s']:>11.2f}"
        )
    lines += ["", f"{'ratio (wall, same run)':<28}{'value':>8}{'target':>9}  status"]
    for name, r in doc["ratios"].items():
        target = "" if r["target"] is None else ("<" if name == "engine/gdal" else "<=") + f"{r['target']}"
        lines.append(f"{name:<28}{r['value']:>8.3f}{target:>9}  {_flag(r['met'])}")
    lines += ["", "agreement with ours (engine)   equal   equal(valid)  mask-edge  neighbour-pick  other"]
    for name, e in doc["equality"].items():
        lines.append(
            f"  {name:<27}{e['equal_fraction']:>8.5f}{e['equal_valid_fraction']:>13.5f}"
            f"{e['mask_edge']:>11}{e['neighbour_pick']:>16}{e['other']:>7}"
        )
    lines += _partition_lines(doc.get("partitions", {})) + _codec_lines(doc.get("codecs", {}))
    return "\n".join(lines)


def _partition_lines(p: dict) -> list[str]:
    if not p:
        return []
    if "error" in p:
        return ["", f"partition probes failed: {p['error'][-500:]}"]
    lines = [""]
    for where in ("engine", "dagster"):
        c = p.get("cost", {}).get(where)
        if c:
            lines.append(
                f"empty partition ({where}): {c['empty_s']:.3f} s vs full {c['full_s']:.3f} s = "
                f"{c['empty_over_full']:.1%} (target < 5%: {_flag(c['empty_over_full'] < 0.05)})"
            )
    for label, r in p.get("writer_rss", {}).items():
        lines.append(
            f"writer RSS ({label}, grid {r['grid_shape'][0]}x{r['grid_shape'][1]}, block {r['block']}): peak "
            f"{r['peak_rss_mb']:.0f} MB, before the write {r['baseline_rss_mb']:.0f} MB, "
            f"partition {r['partition_mb']:.0f} MB, GDAL cache max {r['gdal_cachemax_mb']:.0f} MB"
        )
    for name, t in p.get("targets", {}).items():
        lines.append(f"{name}: {t['value']:.3f} (target {t['target']}) {_flag(t['met'])}")
    return lines


def _codec_lines(c: dict) -> list[str]:
    if not c:
        return []
    lines = ["", f"codecs on {c['chunks']} mosaic chunks ({c['mb']:.0f} MB), one core:"]
    lines.append(f"  {'codec':<32}{'encode MB/s':>12}{'decode MB/s':>12}{'ratio':>8}")
    for name, r in c["codecs"].items():
        lines.append(f"  {name:<32}{r['encode_mb_s']:>12.0f}{r['decode_mb_s']:>12.0f}{r['ratio']:>8.2f}")
    return lines
