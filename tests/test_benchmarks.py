"""The benchmark scripts still run (their figures are printed, never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("bench_extract.py", ["--quick", "--case", "dask"], "RSS growth"),
        ("bench_xarray.py", ["--quick", "--repeats", "1"], "lazy, in memory"),
        ("bench_sinks.py", ["--quick"], "stitch in memory"),
        ("classic_uses.py", ["--repeats", "1"], "every result equal to TensorFlow's, bit for bit"),
    ],
)
def test_script_runs(script, args, expect):
    """Each script exits 0 and prints its figures."""
    if script == "classic_uses.py":
        pytest.importorskip("tensorflow")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout
