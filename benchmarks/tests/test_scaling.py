"""The scaling benchmark's default memory per CPU is the chunk-writer pod's shape in deploy/."""

from benchmarks.scaling import DEPLOY_MEMORY_PER_CPU
from mosaic_assets.defs.execution import WRITER_CPU, WRITER_MEMORY_GB


def test_memory_per_cpu_is_the_writer_pods() -> None:
    assert DEPLOY_MEMORY_PER_CPU == WRITER_MEMORY_GB / WRITER_CPU
