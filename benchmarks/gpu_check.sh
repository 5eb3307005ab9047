#!/usr/bin/env bash
# GPU checks of patchkit's CuPy backend and patchkit.predict, run from the repository root on a machine with an NVIDIA GPU,
# CuPy and PyTorch (no TensorFlow, rasterio, zarr or dask needed):
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # $OUT defaults to ./gpu_out
#
# 1. installs the wheels carried in .whl/ (patchkit's pure-Python dependencies the image lacks, e.g.
#    affine) into /tmp/site, without the network, and puts it and the repository on PYTHONPATH;
# 2. prints nvidia-smi and the versions of what it uses, and checks that neither `import patchkit` nor
#    patchkit.predict of an in-memory numpy array imports TensorFlow, rasterio, zarr or dask (the image lacks them);
# 3. runs the GPU tests with the GPU visible (PATCHKIT_TEST_GPU=0): all of $GPU_TESTS (default
#    tests/core/backends/test_cupy.py: the host tests and the ones marked gpu), then the ones marked gpu of
#    $DEVICE_TESTS (default tests/stitch/test_device.py: predict on the device; its host tests write GeoTIFFs,
#    which needs rasterio, and run in CI);
# 4. runs benchmarks/bench_gpu.py ($BENCH_ARGS added, e.g. BENCH_ARGS=--quick), writing $OUT/bench_gpu.json;
#    its inference section ends with patchkit.predict end to end (a PyTorch model through DLPack).
# Every step's output is also written to $OUT/*.log. Exits non-zero when the tests, the benchmark or the
# import check fail.
set -u -o pipefail

OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-360}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
GPU_TESTS=${GPU_TESTS:-tests/core/backends/test_cupy.py}
DEVICE_TESTS=${DEVICE_TESTS:-tests/stitch/test_device.py}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        2>&1 | tee "$OUT/pip.log"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

{
    nvidia-smi || echo "nvidia-smi failed"
    "$PYTHON" - <<'EOF'
import importlib, platform, time
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "xarray", "pandas", "affine", "psutil", "tqdm", "hypothesis", "pytest"):
    try:
        print(f"{name:<10}", importlib.import_module(name).__version__)
    except Exception as exc:
        print(f"{name:<10} MISSING ({type(exc).__name__}: {exc})")
start = time.perf_counter()
import patchkit  # noqa: E402
print(f"import patchkit: {time.perf_counter() - start:.2f} s")
import sys  # noqa: E402
import numpy as np  # noqa: E402
if hasattr(patchkit, "predict"):
    patchkit.predict(np.ones((1, 64, 64, 2), np.float32), lambda batch: batch[..., :1], 32, 16)
heavy = [m for m in ("tensorflow", "rasterio", "zarr", "dask") if m in sys.modules]
print(f"heavy modules imported by patchkit (import, predict of an in-memory array): {heavy or 'none'}")
try:
    import cupy

    print("CUDA devices:", cupy.cuda.runtime.getDeviceCount(), "runtime", cupy.cuda.runtime.runtimeGetVersion())
    cupy.show_config()
    print("a compiled kernel:", (cupy.arange(3, dtype=cupy.float32) * 2).get())  # needs NVRTC
except Exception as exc:
    print(f"CuPy is not usable: {type(exc).__name__}: {exc}")
EOF
} 2>&1 | tee "$OUT/environment.log"
grep -q "^heavy modules imported by patchkit (import, predict of an in-memory array): none$" "$OUT/environment.log"
import_rc=$?

run_tests() {  # $1: the log's name in $OUT; the rest: pytest's arguments
    local log=$1
    shift
    PATCHKIT_TEST_GPU=0 timeout "$TEST_TIMEOUT" "$PYTHON" -m pytest -q -p no:cacheprovider -rs "$@" 2>&1 \
        | tee "$OUT/$log"
    return "${PIPESTATUS[0]}"
}

echo "== $GPU_TESTS (PATCHKIT_TEST_GPU=0)"
# PYTEST_ARGS="-m gpu" runs only the device tests (the host ones run in CI too).
# shellcheck disable=SC2086  # GPU_TESTS, DEVICE_TESTS, PYTEST_ARGS: lists of words
run_tests pytest_gpu.log ${PYTEST_ARGS:-} $GPU_TESTS
tests_rc=$?
echo "== $DEVICE_TESTS, the tests marked gpu (PATCHKIT_TEST_GPU=0)"
# shellcheck disable=SC2086
run_tests pytest_device.log -m gpu $DEVICE_TESTS
device_rc=$?

echo "== benchmarks/bench_gpu.py ${BENCH_ARGS:-}"
# shellcheck disable=SC2086
timeout "$BENCH_TIMEOUT" "$PYTHON" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}

echo "import check exit $import_rc, tests exit $tests_rc, device tests exit $device_rc, benchmark exit $bench_rc" \
    | tee "$OUT/summary.log"
[ "$import_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ] && [ "$device_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
