#!/usr/bin/env bash
# GPU checks of patchkit's CuPy backend, run from the repository root on a machine with an NVIDIA GPU,
# CuPy and PyTorch (no TensorFlow, rasterio, zarr or dask needed):
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # $OUT defaults to ./gpu_out
#
# 1. installs the wheels carried in .whl/ (patchkit's pure-Python dependencies the image lacks, e.g.
#    affine) into /tmp/site, without the network, and puts it and the repository on PYTHONPATH;
# 2. prints nvidia-smi and the versions of what it uses;
# 3. runs tests/test_backend_cupy.py with the GPU visible (PATCHKIT_TEST_GPU=0): the host tests and
#    the ones marked gpu;
# 4. runs benchmarks/bench_gpu.py, writing $OUT/bench_gpu.json.
# Every step's output is also written to $OUT/*.log. Exits non-zero when the tests or the benchmark fail.
set -u -o pipefail

OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-360}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        2>&1 | tee "$OUT/pip.log"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

{
    nvidia-smi || echo "nvidia-smi failed"
    "$PYTHON" - <<'EOF'
import importlib, platform, time
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "xarray", "pandas", "affine", "hypothesis", "pytest"):
    try:
        print(f"{name:<10}", importlib.import_module(name).__version__)
    except Exception as exc:
        print(f"{name:<10} MISSING ({type(exc).__name__}: {exc})")
start = time.perf_counter()
import patchkit  # noqa: E402
print(f"import patchkit: {time.perf_counter() - start:.2f} s")
try:
    import cupy

    print("CUDA devices:", cupy.cuda.runtime.getDeviceCount(), "runtime", cupy.cuda.runtime.runtimeGetVersion())
    cupy.show_config()
    print("a compiled kernel:", (cupy.arange(3, dtype=cupy.float32) * 2).get())  # needs NVRTC
except Exception as exc:
    print(f"CuPy is not usable: {type(exc).__name__}: {exc}")
EOF
} 2>&1 | tee "$OUT/environment.log"

echo "== tests/test_backend_cupy.py (PATCHKIT_TEST_GPU=0)"
# PYTEST_ARGS="-m gpu" runs only the device tests (the host ones run in CI too).
PATCHKIT_TEST_GPU=0 timeout "$TEST_TIMEOUT" "$PYTHON" -m pytest -q -p no:cacheprovider -rs ${PYTEST_ARGS:-} tests/test_backend_cupy.py \
    2>&1 | tee "$OUT/pytest_gpu.log"
tests_rc=${PIPESTATUS[0]}

echo "== benchmarks/bench_gpu.py"
timeout "$BENCH_TIMEOUT" "$PYTHON" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}

echo "tests exit $tests_rc, benchmark exit $bench_rc" | tee "$OUT/summary.log"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
