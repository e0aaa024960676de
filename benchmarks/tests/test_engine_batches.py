"""The engine method's tasks: consecutive partitions of one time step, sized like build's ranged runs."""

from benchmarks.methods.engine import batches


def test_batches_keep_order_stay_within_a_step_and_respect_the_cap() -> None:
    parts = [("2024-06-01", f"r0000c{i:04d}") for i in range(9)] + [("2024-06-02", f"r0000c{i:04d}") for i in range(8)]
    out = batches(parts, workers=2, per_run=8)
    assert [p for b in out for p in b] == parts
    assert all(len({step for step, _ in b}) == 1 for b in out)
    assert [len(b) for b in out] == [5, 4, 5, 3]  # ceil(17 / 4) = 5
    assert max(len(b) for b in batches(parts, workers=1, per_run=3)) == 3
