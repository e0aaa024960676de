"""``python -m benchmarks.methods JOB.json RESULT.json``: run one method in its own process.

The method's imports and its optional ``setup(job)`` (inputs another tool would also be handed, e.g.
STAC items) happen before the timer starts, so ``work_s`` is the work alone; the harness
measures the whole process from outside as well (benchmarks.measure.run_measured).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from pathlib import Path

from benchmarks.job import Job
from benchmarks.measure import Section, peak_rss_mb


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = Job.load(job_path)
    warnings.filterwarnings("ignore")  # library deprecation noise would drown the table
    started = time.perf_counter()
    module = importlib.import_module(f"benchmarks.methods.{job.method}")
    import_s = time.perf_counter() - started
    context = module.setup(job) if hasattr(module, "setup") else None  # untimed inputs (items, reference)
    with Section() as work:
        extra = module.run(job, context)
    result = {
        "work_s": work.wall_s,
        "work_cpu_s": work.cpu_s,
        "import_s": import_s,
        "peak_rss_mb": peak_rss_mb(),  # after the work: every child has been waited for
        "extra": extra,
    }
    result_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
