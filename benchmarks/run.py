"""``python -m benchmarks.run --size quick``: the whole benchmark in one session.

Generate (or reuse) the scene set, load it into the STAC API, build the GTIs, then run every method
``repeats`` times, interleaved (engine, dagster, engine_pipeline, gdal, odc_stac, floor, then again),
each in its own measured process; check that the mosaics agree; measure the per-partition targets
and the codecs; print the table and write the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from importlib import import_module
from pathlib import Path

from . import codec_compare, dataset, probes, report
from .compare import Agreement, compare, zarr_reader
from .job import Job
from .measure import Section, run_measured
from .methods import METHODS
from .mosaic import grid_of, planned_partitions, spec_of, time_index
from .prepare import prepare
from .sizes import get_size

COMPARED = ("dagster", "dagster_postgres", "engine_pipeline", "gdal", "odc_stac")  # against ours (the engine)
RESULTS = Path(__file__).resolve().parent / "results"


def run_method(job: Job, workdir: Path, timeout_s: float) -> dict:
    """One run of one method in its own process; raises if it fails or hangs."""
    shutil.rmtree(job.out, ignore_errors=True)
    Path(job.out).mkdir(parents=True)
    job_path = job.save(workdir / f"{job.method}.job.json")
    result_path = workdir / f"{job.method}.result.json"
    result_path.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]  # a busy neighbour on a shared machine shows here
    stats = run_measured(
        [sys.executable, "-m", "benchmarks.methods", str(job_path), str(result_path)],
        cwd=str(dataset.REPO),
        timeout_s=timeout_s,
    )
    if stats.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"method {job.method} failed (exit {stats.returncode})")
    result = json.loads(result_path.read_text())
    print(f"  {job.method:<16} work {result['work_s']:7.2f} s  process {stats.wall_s:7.2f} s", flush=True)
    return {**result, "process_wall_s": stats.wall_s, "process_cpu_s": stats.cpu_s, "load_1m_before": load_before}


def agreement(job: Job, reference: str) -> dict:
    """How much of ``job``'s mosaic equals the reference (ours), over every time step with scenes."""
    spec, grid = spec_of(job.spec), grid_of(job.spec)
    output = import_module(f"benchmarks.methods.{job.method}").output
    total = Agreement()
    for step in job.steps:
        ours = zarr_reader(reference, time_index(spec, step))
        compare(ours, output(job, step), grid.shape[0], spec.nodata, into=total)
    return total.as_dict()


def describe(size, spec_path: str, data_root: str, steps: list[str], items: list[dict]) -> dict:
    spec, grid = spec_of(spec_path), grid_of(spec_path)
    cfg = size.scenes
    return {
        "size": size.name,
        "scenes": len(items),
        "scene_size": cfg.scene_size,
        "bands": len(spec.bands),
        "dtype": spec.dtype,
        "crs_of_scenes": sorted({i["properties"]["proj:code"] for i in items}),
        "mosaic_crs": spec.crs,
        "resolution": spec.resolution,
        "time_steps": len(steps),
        "grid_shape": list(grid.shape),
        "chunks": [1, len(spec.bands), *grid.chunk_shape],
        "block_shape": list(grid.block_shape),
        "partition_bytes": spec.partition_bytes,
        "partitions": len(planned_partitions(spec_path, data_root, steps)),
        "codec": spec.codec.model_dump(),
        "resampling": spec.resampling,
        "output_mpx": len(steps) * grid.shape[0] * grid.shape[1] / 1e6,
        "source_mpx": len(items) * cfg.scene_size**2 / 1e6,
        "repeats": size.repeats,
    }


def partition_targets(cost: dict, rss: dict) -> dict:
    out = {}
    for where in ("engine", "dagster"):
        if where in cost:
            value = cost[where]["empty_over_full"]
            out[f"empty/full partition ({where})"] = {"value": value, "target": "< 0.05", "met": value < 0.05}
    for label, r in rss.items():
        grown = r["peak_rss_mb"] - r["baseline_rss_mb"]
        bound = 3 * r["partition_mb"] + r["gdal_cachemax_mb"]
        out[f"writer RSS growth / partition ({label})"] = {
            "value": grown / r["partition_mb"],
            "target": f"<= 3 + GDAL cache ({bound:.0f} MB)",
            "met": grown <= bound,
        }
    if {"mosaic", "mosaic_x4"} <= rss.keys():
        value = rss["mosaic_x4"]["peak_rss_mb"] / rss["mosaic"]["peak_rss_mb"]
        out["writer peak RSS, mosaic x4 / x1"] = {"value": value, "target": "<= 1.10 (flat)", "met": value <= 1.10}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--size", default="quick", help="quick | large")
    parser.add_argument("--repeats", type=int, default=None, help="runs per method (default: the size's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--api", default=os.environ.get("BENCH_STAC_URL", "http://127.0.0.1:8095"))
    parser.add_argument("--work-dir", type=Path, default=dataset.REPO / ".local" / "bench")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--partition-bytes", default=None, help="partition size instead of the demo spec's 32MiB (e.g. 256MiB)"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES", ""),
        help="libpq keywords of a PostgreSQL server for dagster_postgres, e.g. 'host=127.0.0.1 port=5455 "
        "user=postgres password=stac' (make bench passes the STAC API's); without it that method is skipped",
    )
    parser.add_argument("--skip-probes", action="store_true", help="skip partition cost, writer RSS and codecs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a method run counts as hung")
    parser.add_argument(
        "--gti-threads",
        default="1",
        help="GTI_NUM_THREADS for every method (default 1: GDAL 3.12's multithreaded GTI read deadlocks on "
        "reprojected sources when the warper shares GDAL's 2-thread pool; see README). 'engine' leaves it unset.",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # library deprecation and zarr-v3 consolidation notices
    if args.gti_threads != "engine":
        os.environ["GTI_NUM_THREADS"] = args.gti_threads  # inherited by every method and its workers
    size = get_size(args.size, args.repeats)
    methods = [m for m in args.methods.split(",") if m]
    if "dagster_postgres" in methods and not args.postgres:
        print("[bench] no --postgres server given: dagster_postgres skipped", flush=True)
        methods.remove("dagster_postgres")
    if "engine" not in methods:
        methods.insert(0, "engine")  # every ratio and every agreement is against ours
    work = args.work_dir.resolve() / (size.name + (f"-p{args.partition_bytes}" if args.partition_bytes else ""))
    api = args.api.rstrip("/")

    print(f"[bench] scenes for {size.name} ...", flush=True)
    items = dataset.generate(args.work_dir.resolve(), size, args.workers)
    dataset.load_into_stac(api, size.collection, items)
    spec_doc = dataset.bench_spec(size, api, items, partition_bytes=args.partition_bytes)
    grown_doc = dataset.bench_spec(size, api, items, grow=2.0, partition_bytes=args.partition_bytes)
    spec_path = str(dataset.write_spec(spec_doc, work / "spec.yaml"))
    grown_path = str(dataset.write_spec(grown_doc, work / "spec_x4.yaml"))
    with Section() as prep:
        steps = prepare(spec_of(spec_path), work / "prepared")
    grown_steps = prepare(spec_of(grown_path), work / "prepared_x4")
    runs_dir = work / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    job = Job("engine", spec_path, str(work / "prepared"), "", tuple(steps), args.workers, api, postgres=args.postgres)
    print(f"[bench] {len(items)} scenes, {len(steps)} time steps, GTIs in {prep.wall_s:.1f} s; reference + warm-up run")
    reference = replace(job, out=str(work / "reference"))
    run_method(reference, runs_dir, args.timeout)
    reference_store = str(Path(reference.out) / "engine.zarr")

    runs: dict[str, list[dict]] = {m: [] for m in methods}
    equality: dict[str, dict] = {}
    for r in range(size.repeats):
        print(f"[bench] repeat {r + 1}/{size.repeats}", flush=True)
        for method in methods:
            mjob = replace(job, method=method, out=str(runs_dir / method), reference=reference_store)
            runs[method].append(run_method(mjob, runs_dir, args.timeout))
            if r == 0 and method in COMPARED:
                equality[method] = agreement(mjob, reference_store)

    dataset_info = {**describe(size, spec_path, job.data_root, steps, items), "prepare_s": prep.wall_s}
    figures = {m: report.method_figures(runs[m], dataset_info["output_mpx"]) for m in methods}
    doc = {
        "methods": figures,
        "ratios": report.ratios(figures),
        "equal_fraction": {m: e["equal_fraction"] for m, e in equality.items()},
        "equality": equality,
        "dataset": dataset_info,
        "machine": {**report.machine(), "workers": args.workers, "GTI_NUM_THREADS": os.environ.get("GTI_NUM_THREADS")},
    }
    if not args.skip_probes:
        print("[bench] partition probes and codecs", flush=True)
        grown = replace(job, spec=grown_path, data_root=str(work / "prepared_x4"), steps=tuple(grown_steps))
        try:  # a failing probe must not cost the method figures above
            cost = probes.partition_cost(grown, runs_dir, repeats=3)
            rss = probes.writer_rss(job, grown, runs_dir)
            doc["partitions"] = {"cost": cost, "writer_rss": rss, "targets": partition_targets(cost, rss)}
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            doc["partitions"] = {"error": str(exc)[-3000:]}
        spec = spec_of(spec_path)
        chunks = list(codec_compare.stored_chunks(reference_store, time_index(spec, steps[0]), spec.nodata, limit=24))
        doc["codecs"] = codec_compare.measure(chunks)
    by_size = RESULTS / f"{work.name}.json"  # large.json, or large-p256MiB.json for another partition size
    report.write_json(doc, args.out, by_size)
    print()
    print(report.table(doc))
    print(f"\n[bench] wrote {args.out} and {by_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
