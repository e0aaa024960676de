"""A child's peak RSS is its own, not the parent's it was forked from (the ru_maxrss pitfall)."""

import json
import subprocess
import sys

from benchmarks.measure import own_peak_rss_mb, run_measured


def test_peak_rss_is_measured_inside_the_child():
    ballast = bytearray(300 * 2**20)  # a large parent
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from benchmarks.measure import peak_rss_mb; import json; print(json.dumps(peak_rss_mb()))"
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert own_peak_rss_mb() > 300
    assert child < 200


def test_run_measured_reports_the_exit_code():
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3
