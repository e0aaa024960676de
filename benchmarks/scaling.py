"""``python -m benchmarks.scaling``: does one chunk-writer step use every CPU it is given?

The figure behind the "Every core a writer pod pays for does work" issue: one step (a ranged run's
partitions, ``engine.parallel_write.write_blocks``) with a CPU limit of N writers, N = 1, 2, ... up to
this machine's CPUs, given N times a writer pod's memory per CPU (``--memory-per-cpu``; 0: the same
memory for every N). For each N: wall time, CPU seconds (the step's process and every worker it
waited for), output Mpx/s; then throughput(N) / throughput(1) (target >= 0.85 N) and CPU used / (N x wall)
(target >= 0.85).

The machine's ceiling beside it (``control_child``): N independent processes each reading the step
through GDAL alone, at once, against one alone. They share nothing but the machine, so their
throughput ratio is what N busy cores give this work here (on this 2-core VM: 1.47-1.57x for 2; a zlib
loop: 2.0x).

Data: the composites benchmark's scenes (``benchmarks.composites``: 20 Sentinel-2-shaped scenes over 10
dates across UTM 32/33, per-band DEFLATE COGs, generated once and cached), as a plain mosaic (best on top,
its 4 bands one stack) of 4 bands, 12.6 Mpx, chunks 1024² and one chunk per partition: 12 partitions, as
a backfill batch of 12 is one ranged run. Each N runs in its own process, N alternating across repeats.
Figures, never assertions; ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.composites import ROOT, STEP, Layout, grid_bbox, prepare, scene_items
from benchmarks.mixed_resolution import machine, wait_quiet

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
CASE = "scaling_mosaic"
PARTITION_BYTES = "8MiB"  # one 1024² chunk of 4 uint16 bands per partition
DEPLOY_MEMORY_PER_CPU = 8 / 3  # GB per CPU of a chunk-writer pod (defs.execution: WRITER_MEMORY_GB / WRITER_CPU)


def child(job_path: str, cpus: int) -> dict:
    """One step: every block of the job written on ``cpus`` worker processes, into a fresh template."""
    from benchmarks.measure import Section, peak_rss_mb
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles
    from mosaic_assets.engine.parallel_write import BlockTask, write_blocks
    from mosaic_assets.engine.spec import parse_specs
    from mosaic_assets.engine.store import ensure_template

    os.environ["MOSAIC_WORKER_CPUS"] = str(cpus)  # the step's CPU limit, as the writer pod sets it
    job = json.loads(Path(job_path).read_text())
    (spec,) = parse_specs(job["spec"])
    grid = MosaicGrid.from_spec(spec)
    files = GtiFiles.for_step(Path(job["gti"]), STEP)
    shutil.rmtree(job["store"], ignore_errors=True)
    # the template opens the store, and zarr starts its I/O thread: this process then runs threads, as a
    # Dagster step does, so its writers come from a fork server, as a step's do (engine.workers)
    ensure_template(spec, grid, job["store"], 1)
    tasks = [BlockTask(b.key, files, 0, b) for b in grid.blocks()]
    with Section() as section:
        outcomes = write_blocks(spec, grid, job["store"], tasks)
    failed = [o.error for o in outcomes if o.error]
    if failed:
        raise RuntimeError(failed[0])
    mpx = grid.shape[0] * grid.shape[1] / 1e6
    return {
        "cpus": cpus,
        "wall_s": section.wall_s,
        "cpu_s": section.cpu_s,
        "mpx": mpx,
        "mpx_per_s": mpx / section.wall_s,
        "cpu_s_per_mpx": section.cpu_s / mpx,
        "utilisation": section.cpu_s / (cpus * section.wall_s),
        "partitions": len(tasks),
        "peak_rss_mb": peak_rss_mb(),
    }


def control_child(job_path: str) -> dict:
    """The machine's own ceiling, one copy: GDAL alone reading the step's blocks through its GTIs (the
    groups the engine reads, every block in turn, one thread, nothing written). N copies at once share
    nothing but the machine: how much slower each gets is what N busy cores cost this work here."""
    import time

    import rasterio
    from rasterio.windows import Window

    from mosaic_assets.engine.bandgroups import read_plan
    from mosaic_assets.engine.gdal_env import gdal_env
    from mosaic_assets.engine.grid import MosaicGrid
    from mosaic_assets.engine.gti import GtiFiles
    from mosaic_assets.engine.spec import parse_specs
    from mosaic_assets.engine.writer import block_scenes

    os.environ["MOSAIC_WORKER_CPUS"] = "1"
    job = json.loads(Path(job_path).read_text())
    (spec,) = parse_specs(job["spec"])
    grid = MosaicGrid.from_spec(spec)
    files = GtiFiles.for_step(Path(job["gti"]), STEP)
    blocks = list(grid.blocks())
    groups = read_plan(spec, block_scenes(grid, files, blocks[0]))
    wall, cpu = time.perf_counter(), time.process_time()
    with gdal_env(stac=spec.stac, local_scenes=True):
        for group in groups:
            with rasterio.open(str(files.group_xml(group))) as gti:
                for block in blocks:
                    gti.read(window=Window(block.cols.start, block.rows.start, block.shape[1], block.shape[0]))
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def control_once(job_path: Path, copies: int, quiet: float, memory_per_cpu: float) -> dict:
    """``copies`` control processes at once: the slowest one's wall, and each one's CPU seconds."""
    busy, waited = wait_quiet(quiet, 300)
    env = dict(os.environ)
    if memory_per_cpu:
        env["MOSAIC_WORKER_MEMORY_GB"] = f"{memory_per_cpu:.3f}"  # one writer's share of the pod
    outs = [job_path.parent / f"control-{copies}-{k}.json" for k in range(copies)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scaling", "--control-child", str(job_path), str(out)],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
        )
        for out in outs
    ]
    if any(proc.wait() for proc in procs):
        raise RuntimeError("a control process failed")
    each = [json.loads(out.read_text()) for out in outs]
    return {
        "copies": copies,
        "wall_s": max(e["wall_s"] for e in each),
        "cpu_s_each": [e["cpu_s"] for e in each],
        "others_before": busy,
        "waited_s": waited,
    }


def run_once(job_path: Path, cpus: int, quiet: float, memory_per_cpu: float) -> dict:
    """One step in a fresh process; with ``memory_per_cpu``, given that much memory per CPU of its limit
    (``MOSAIC_WORKER_MEMORY_GB``), as a writer pod of N CPUs is given N times the memory of one."""
    busy, waited = wait_quiet(quiet, 300)
    out = job_path.parent / f"result-{cpus}.json"
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--child", str(job_path), str(cpus), str(out)]
    env = dict(os.environ)
    if memory_per_cpu:
        env["MOSAIC_WORKER_MEMORY_GB"] = f"{memory_per_cpu * cpus:.3f}"
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], env=env)
    result = json.loads(out.read_text())
    return {
        **result,
        "memory_gb": env.get("MOSAIC_WORKER_MEMORY_GB", "(default 2)"),
        "others_before": busy,
        "waited_s": waited,
    }


def ceilings(controls: list[dict]) -> dict[int, float]:
    """Per N: the control's throughput with N copies at once against one copy (medians over repeats)."""
    walls: dict[int, list[float]] = {}
    for control in controls:
        walls.setdefault(control["copies"], []).append(control["wall_s"])
    alone = statistics.median(walls[min(walls)])
    return {n: n * alone / statistics.median(w) for n, w in sorted(walls.items())}


def summarise(runs: list[dict]) -> dict:
    by_cpus: dict[int, list[dict]] = {}
    for run in runs:
        by_cpus.setdefault(run["cpus"], []).append(run)
    rows = {
        n: {
            k: statistics.median(r[k] for r in rs)
            for k in ("wall_s", "cpu_s", "mpx_per_s", "cpu_s_per_mpx", "utilisation")
        }
        for n, rs in sorted(by_cpus.items())
    }
    base = rows[min(rows)]["mpx_per_s"]
    for n, row in rows.items():
        row["speedup"] = row["mpx_per_s"] / base
        row["speedup_target"] = 0.85 * n
        row["speedup_met"] = row["speedup"] >= 0.85 * n
        row["utilisation_met"] = row["utilisation"] >= 0.85
    return rows


def table(rows: dict) -> str:
    lines = [
        "cpus   wall s    cpu s   Mpx/s  cpu s/Mpx  speed-up (>= 0.85 N)  cpu/(N x wall) (>= 0.85)  machine ceiling"
    ]
    for n, r in rows.items():
        ceiling = f"{r['ceiling_speedup']:6.3f}" if "ceiling_speedup" in r else "     -"
        lines.append(
            f"{n:>4} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['mpx_per_s']:7.2f} {r['cpu_s_per_mpx']:10.3f}"
            f"  {r['speedup']:6.3f} {'met' if r['speedup_met'] else 'MISSED':>6}"
            f"          {r['utilisation']:6.3f} {'met' if r['utilisation_met'] else 'MISSED':>6}           {ceiling}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", default="", help="comma-separated N (default: 1 .. this machine's CPUs)")
    parser.add_argument("--quiet", type=float, default=0.3, help="before each run, wait until others use fewer cores")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--partition-bytes",
        default=PARTITION_BYTES,
        help=f"the step's partitions (default {PARTITION_BYTES}: one chunk each, the most block edges per pixel)",
    )
    parser.add_argument(
        "--memory-per-cpu",
        type=float,
        default=DEPLOY_MEMORY_PER_CPU,
        help=f"GB of memory per CPU of the step's limit (default {DEPLOY_MEMORY_PER_CPU:.2f}: the chunk-writer pod's "
        "shape in deploy/); 0: every N gets the same (MOSAIC_WORKER_MEMORY_GB, default 2)",
    )
    parser.add_argument("--no-control", action="store_true", help="skip the machine's ceiling (control_child)")
    parser.add_argument("--child", nargs=3, metavar=("JOB", "CPUS", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--control-child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job, cpus, result = args.child
        Path(result).write_text(json.dumps(child(job, int(cpus))))
        return
    if args.control_child:
        job, result = args.control_child
        Path(result).write_text(json.dumps(control_child(job)))
        return
    from mosaic_assets.engine.capacity import available_cpus

    counts = [int(c) for c in args.cpus.split(",")] if args.cpus else list(range(1, available_cpus() + 1))
    layout = Layout()
    items = scene_items(layout)  # generates the scenes once (cached)
    case = CASE if args.partition_bytes == PARTITION_BYTES else f"{CASE}_{args.partition_bytes.lower()}"
    job = prepare(case, items, grid_bbox(layout), args.partition_bytes)
    job_path = ROOT / "work" / case / "job.json"
    started = datetime.now(UTC)
    runs, controls = [], []
    for repeat in range(args.repeats):
        for cpus in counts if repeat % 2 == 0 else counts[::-1]:
            run = run_once(job_path, cpus, args.quiet, args.memory_per_cpu)
            print(f"  repeat {repeat + 1} cpus {cpus}: wall {run['wall_s']:.2f} s cpu {run['cpu_s']:.2f} s", flush=True)
            runs.append({**run, "repeat": repeat + 1})
            if not args.no_control:
                control = control_once(job_path, cpus, args.quiet, args.memory_per_cpu)
                print(f"  repeat {repeat + 1} control x{cpus}: wall {control['wall_s']:.2f} s", flush=True)
                controls.append({**control, "repeat": repeat + 1})
    rows = summarise(runs)
    for n, ceiling in (ceilings(controls) if controls else {}).items():
        rows[n]["ceiling_speedup"] = ceiling  # what N independent GDAL processes reach here
        rows[n]["speedup_of_ceiling"] = rows[n]["speedup"] / ceiling
    print(table(rows))
    report = {
        "benchmark": "scaling",
        "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "worker_memory_gb_env": os.environ.get("MOSAIC_WORKER_MEMORY_GB", "(default 2)"),
        "config": {
            "case": case,
            "partition_bytes": args.partition_bytes,
            "partitions": len(job["blocks"]),
            "repeats": args.repeats,
            "memory_per_cpu_gb": args.memory_per_cpu or None,
        },
        "runs": runs,
        "controls": controls,
        "summary": {str(n): r for n, r in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    shutil.rmtree(ROOT / "work" / case / "store.zarr", ignore_errors=True)


if __name__ == "__main__":
    main()
