"""A catalogue of bad inputs at every public entry point, each refused the same way.

Every case is a hostile input or a fault a new user would plausibly try. Each must

1. raise a :class:`patchkit.errors.PatchkitError` (the command: exit 1 with one line on stderr, or 2 for
   a usage error with argparse's usage lines above its one error line, and never a traceback; templates:
   before a kernel starts, which :func:`no_kernels` turns into an error);
2. say which argument (file, option), which value, and what to do (``match``: regexes, one each);
3. come back within a second (asserted below 2 s for a busy 2-core CI machine) and before anything
   large is allocated (tracemalloc peak below 32 MiB: numpy reports its buffers to tracemalloc);
4. leave no output that reads as complete: the output path does not exist, or the sink's reader
   refuses it with :class:`IncompleteStoreError` (or, for another program's folder or manifest that
   was there before, as foreign).

Command cases run ``patchkit.jobs.cli.main(argv)`` in this process (timed and traced like the rest); those
marked ``sub=True`` also run as a real ``python -m patchkit.jobs.cli`` process, which pays for its imports
(bounded by :data:`MAX_SUBPROCESS_SECONDS` instead).

One table (:data:`CASES`), one parametrized test over it. A few command cases also run as a real
subprocess (``sub=True``). Cases marked ``xfail`` are known gaps in files other engineers own (their
reasons say what happens and the fix). ``docs/bad_inputs.md`` is made from the same table::

    .venv/bin/python -m tests.test_catalogue > docs/bad_inputs.md

and :func:`test_docs_are_current` fails when it is out of date.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import pytest
import xarray as xr

import patchkit
from patchkit import PatchSpec
from patchkit.errors import (
    BackendUnavailableError,
    BudgetTooSmallError,
    DimensionError,
    ForeignStoreError,
    GeoreferenceError,
    IncompleteStoreError,
    InvalidImageError,
    ModelError,
    InvalidMemoryError,
    InvalidSpecError,
    KernelTooLargeError,
    OutputTooLargeError,
    ParameterFileError,
    PatchIndexError,
    PatchkitError,
    PatchkitTypeError,
    PatchkitValueError,
    SinkWriteError,
    SourceReadError,
    UnknownBackendError,
    UnsupportedDtypeError,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad_inputs.md"
#: Bounds of requirement 3.
MAX_SECONDS, MAX_PEAK = 2.0, 32 * 2**20
#: A real ``patchkit`` process pays for its imports (patchkit, rioxarray: 2-5 s on the 2-core CI machine).
MAX_SUBPROCESS_SECONDS = 20.0
#: Words (or an example of a good value) that say what to do.
FIX = (r"\b(pass|use|choose|raise|install|rename|check|run|free|write|pick|select|convert|add|drop|remove|open|"
       r"wrap|stream|fix|resample|warp|clip|re-download|re-create|stack|call|cancel|give|set)\b|e\.g\.|such as")

# --------------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: where it goes, what it is, and what must come back.

    ``call(ctx, out)`` calls a Python entry point; ``argv(ctx, out)`` gives the arguments of the
    ``patchkit`` command instead. ``error`` is the exception class (or, for the command, the exit
    status); ``match`` the regexes the message must all match (argument, value, fix). ``output`` is
    the kind of output the case aims at (``out``: ``zarr``, ``geotiff``, ``tfrecord``, ``path``), and
    ``at(ctx, out)`` the path to check when it is not ``out``.
    """

    id: str
    entry: str
    input: str
    error: type | int
    match: tuple[str, ...]
    call: Callable | None = None
    argv: Callable | None = None
    output: str | None = None
    at: Callable | None = None
    sub: bool = False
    needs: tuple[str, ...] = ()
    xfail: str | None = None


CASES: list[Case] = []


def case(id: str, entry: str, input: str, error, *match: str, **options) -> None:
    """Add a case; ``match`` defaults its last regex to :data:`FIX` when only argument and value are given."""
    match = match + (FIX,) if len(match) < 3 else match
    CASES.append(Case(id, entry, input, error, tuple(match), **options))


def cli(id: str, input: str, status: int, *match: str, argv, **options) -> None:
    """Add a case of the ``patchkit`` command; ``input`` starts with the subcommand (or says there is none)."""
    command = input.split()[0]
    entry = "patchkit " + command if command in ("inspect", "extract", "predict", "run", "templates") else "patchkit"
    case(id, entry, input, status, *match, argv=argv, **options)


def literal(value: Any) -> str:
    return re.escape(repr(value))



# ---- PatchSpec ------------------------------------------------------------------------------------

for id, argument, value, expect in [
    ("spec-sizes-zero", "sizes", 0, r"positive"),
    ("spec-sizes-negative", "sizes", -3, r"positive"),
    ("spec-sizes-fraction", "sizes", 2.5, r"integers"),
    ("spec-sizes-nan", "sizes", math.nan, r"integers"),
    ("spec-sizes-inf", "sizes", math.inf, r"integers"),
    ("spec-sizes-1e999", "sizes", 1e999, r"integers"),
    ("spec-sizes-text", "sizes", "16", r"integers"),
    ("spec-sizes-bool", "sizes", True, r"integers"),
    ("spec-sizes-empty-tuple", "sizes", (), r"length 0"),
    ("spec-sizes-three", "sizes", (3, 3, 3), r"length 3"),
    ("spec-sizes-batch-entry", "sizes", [2, 3, 3, 1], r"batch and depth entries must be 1"),
    ("spec-sizes-huge", "sizes", 10**12, r"2\*\*31 - 1"),
    ("spec-strides-set", "strides", {4}, r"no order"),
    ("spec-strides-none", "strides", None, r"required"),
    ("spec-rates-zero", "rates", 0, r"positive"),
    ("spec-rates-pair-negative", "rates", (1, -1), r"positive"),
    ("spec-padding-unknown", "padding", "FULL", r"not supported"),
    ("spec-padding-none", "padding", None, r"not supported"),
    ("spec-padding-int", "padding", 0, r"not supported"),
]:
    kwargs = {"sizes": 4, "strides": 4, argument: value}
    shown = "1e999" if value == 1e999 and id.endswith("1e999") else repr(value)
    case(id, "PatchSpec", f"{argument}={shown}", InvalidSpecError, rf"{argument}\b", expect,
         call=lambda c, o, kwargs=kwargs: PatchSpec(**kwargs))

SHAPE = (1, 8, 8, 2)
for id, value, error, expect in [
    ("spec-plan-text", "lots", InvalidMemoryError, r"max_memory='lots'"),
    ("spec-plan-negative", -1, InvalidMemoryError, r"max_memory=-1"),
    ("spec-plan-nan", math.nan, InvalidMemoryError, r"max_memory=nan"),
    ("spec-plan-1e999", "1e999", InvalidMemoryError, r"max_memory='1e999'"),
    ("spec-plan-bool", True, InvalidMemoryError, r"max_memory=True"),
    ("spec-plan-unit", "12 parsecs", InvalidMemoryError, r"max_memory='12 parsecs'"),
    ("spec-plan-tiny", "1KiB", BudgetTooSmallError, r"max_memory='1KiB'"),
]:
    case(id, "PatchSpec.plan", f"max_memory={value!r}", error, r"max_memory", expect,
         call=lambda c, o, value=value: PatchSpec(4, 2).plan((1, 64, 64, 3), "float32", value))
case("spec-shape-rank", "PatchSpec.output_shape", "shape (10, 10, 3)", InvalidImageError, r"shape \(10, 10, 3\)",
     r"rank 3", call=lambda c, o: PatchSpec(4, 4).output_shape((10, 10, 3)))
case("spec-shape-empty", "PatchSpec.check", "shape (1, 0, 5, 1)", InvalidImageError, r"shape \(1, 0, 5, 1\)",
     r"empty", r"needs at least one", call=lambda c, o: PatchSpec(4, 4).check((1, 0, 5, 1)))
case("spec-kernel-too-large", "PatchSpec.check", "kernel 5 on a 3 x 3 image, VALID", KernelTooLargeError,
     r"kernel 5", r"height 3", call=lambda c, o: PatchSpec(5, 1).check((1, 3, 3, 1)))
case("spec-dtype-object", "PatchSpec.nbytes", "dtype object", UnsupportedDtypeError, r"dtype object", r"'O'",
     r"convert", call=lambda c, o: PatchSpec(4, 4).nbytes(SHAPE, "object"))
case("spec-dtype-datetime", "PatchSpec.nbytes", "dtype datetime64[ns]", UnsupportedDtypeError, r"dtype",
     r"datetime64", r"convert", call=lambda c, o: PatchSpec(4, 4).nbytes(SHAPE, "datetime64[ns]"))
case("spec-window-out-of-range", "PatchSpec.window", "patch (99, 0) of a 2 x 2 grid", PatchIndexError,
     r"\b(i|row)\b", r"99", call=lambda c, o: PatchSpec(4, 4).window(99, 0, SHAPE))
case("spec-window-fraction", "PatchSpec.window", "patch (1.5, 0)", PatchIndexError, r"\b(i|row)\b", r"1\.5",
     call=lambda c, o: PatchSpec(4, 4).window(1.5, 0, SHAPE))
case("spec-from-dict-missing", "PatchSpec.from_dict", "{'sizes': 4} (no strides)", InvalidSpecError,
     r"strides", r"\{'sizes': 4\}", call=lambda c, o: PatchSpec.from_dict({"sizes": 4}))

# ---- extract_patches and extract_image_patches -------------------------------------------------------

case("extract-none", "extract_patches", "images=None", PatchkitTypeError, r"images", r"None",
     call=lambda c, o: patchkit.extract_patches(None, 4, 4))
case("extract-path-string", "extract_patches", "images='scene.tif' (a path)", PatchkitTypeError, r"images",
     r"scene\.tif", r"open", call=lambda c, o: patchkit.extract_patches("scene.tif", 4, 4))
for id, shape, rank in [("extract-rank-3", (8, 8, 2), 3), ("extract-rank-2", (8, 8), 2), ("extract-rank-5", (1, 1, 8, 8, 2), 5)]:
    case(id, "extract_patches", f"images of shape {shape}", InvalidImageError, r"images",
         re.escape(str(shape)), r"add a batch axis|add .* axis",
         call=lambda c, o, shape=shape: patchkit.extract_patches(np.zeros(shape, np.float32), 4, 4))
for id, dtype in [("extract-dtype-object", "object"), ("extract-dtype-datetime", "datetime64[s]"),
                  ("extract-dtype-longdouble", "longdouble"), ("extract-dtype-str", "<U1"),
                  ("extract-dtype-structured", "i4,f4")]:
    case(id, "extract_patches", f"images of dtype {dtype}", UnsupportedDtypeError, r"images", r"dtype",
         r"convert", call=lambda c, o, dtype=dtype: patchkit.extract_patches(np.zeros((1, 4, 4, 1), dtype), 2, 2))
case("extract-ragged-list", "extract_patches", "images=[[1, 2], [3]] (ragged)", PatchkitTypeError, r"images",
     r"list", call=lambda c, o: patchkit.extract_patches([[1, 2], [3]], 1, 1))
case("extract-dict", "extract_patches", "images={'a': 1}", PatchkitTypeError, r"images", r"dict",
     call=lambda c, o: patchkit.extract_patches({"a": 1}, 1, 1))
case("extract-kernel-too-large", "extract_patches", "kernel 9 on a 4 x 4 image, VALID", KernelTooLargeError,
     r"kernel 9", r"height 4", call=lambda c, o: patchkit.extract_patches(np.zeros((1, 4, 4, 1)), 9, 1))
for id, value in [("extract-backend-torch", "torch"), ("extract-backend-none", None), ("extract-backend-cuda", "cuda")]:
    case(id, "extract_patches", f"backend={value!r}", UnknownBackendError, r"backend", literal(value),
         call=lambda c, o, value=value: patchkit.extract_patches(c.img, 4, 4, backend=value))
case("extract-huge-scene", "extract_patches", "a 100,000 x 100,000 scene (a zero-stride view), stride 1",
     OutputTooLargeError, r"output \(1, 99993, 99993, 64\)", r"available", r"iter_patches",
     call=lambda c, o: patchkit.extract_patches(np.broadcast_to(np.float32(0), (1, 10**5, 10**5, 1)), 8, 1))
case("extract-same-kernel-huge", "extract_patches", "sizes=10**6, padding='SAME' on a 4 x 4 image",
     OutputTooLargeError, r"1000000", r"available", r"smaller sizes",
     call=lambda c, o: patchkit.extract_patches(np.zeros((1, 4, 4, 1), np.float32), 10**6, 1, padding="SAME"))
case("extract-sizes-int32", "extract_patches", "sizes=2**31", InvalidSpecError, r"sizes", r"2147483648",
     call=lambda c, o: patchkit.extract_patches(c.img, 2**31, 1))
case("extract-dask-rank-3", "extract_patches", "a 3-D dask array", InvalidImageError, r"images", r"\(8, 8, 2\)",
     r"add", call=lambda c, o: patchkit.extract_patches(__import__("dask.array").array.zeros((8, 8, 2)), 2, 2))
case("extract-tensor-string", "extract_patches", "a tf.string tensor", UnsupportedDtypeError, r"images",
     r"string", r"convert", needs=("tf",),
     call=lambda c, o: patchkit.extract_patches(c.tf.constant([[[["a"]]]]), 1, 1))
case("tf1-ksizes-length", "extract_image_patches", "ksizes=[1, 2, 2]", InvalidSpecError, r"ksizes",
     r"\[1, 2, 2\]", call=lambda c, o: patchkit.extract_image_patches(c.img, [1, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"))
case("tf1-both-sizes", "extract_image_patches", "ksizes and sizes both given", InvalidSpecError, r"ksizes",
     r"sizes=\[1, 2, 2, 1\]", r"pass ksizes or sizes",
     call=lambda c, o: patchkit.extract_image_patches(c.img, [1, 2, 2, 1], [1, 1, 1, 1], sizes=[1, 2, 2, 1]))
case("tf1-strides-missing", "extract_image_patches", "strides=None", InvalidSpecError, r"strides", r"None",
     call=lambda c, o: patchkit.extract_image_patches(c.img, [1, 2, 2, 1]))
case("tf1-padding-space", "extract_image_patches", "padding='VALID ' (a trailing space)", InvalidSpecError,
     r"padding", r"'VALID '", call=lambda c, o: patchkit.extract_image_patches(c.img, [1, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID "))

# ---- iter_patches ---------------------------------------------------------------------------------

for id, value, error in [
    ("iter-memory-text", "lots", InvalidMemoryError),
    ("iter-memory-zero", 0, InvalidMemoryError),
    ("iter-memory-negative", -512, InvalidMemoryError),
    ("iter-memory-nan", math.nan, InvalidMemoryError),
    ("iter-memory-inf", math.inf, InvalidMemoryError),
    ("iter-memory-1e999", "1e999", InvalidMemoryError),
    ("iter-memory-bool", True, InvalidMemoryError),
    ("iter-memory-list", [512], InvalidMemoryError),
    ("iter-memory-huge", 10**30, InvalidMemoryError),
    ("iter-memory-tiny", "1KiB", BudgetTooSmallError),
]:
    case(id, "iter_patches", f"max_memory={value!r}", error, r"max_memory", literal(value),
         call=lambda c, o, value=value: patchkit.iter_patches(np.zeros((1, 64, 64, 3), np.float32), 4, 2, max_memory=value))
case("iter-empty-image", "iter_patches", "an empty image (1, 0, 8, 2)", InvalidImageError, r"images",
     r"\(1, 0, 8, 2\)", r"needs at least one", call=lambda c, o: patchkit.iter_patches(np.zeros((1, 0, 8, 2)), 2, 2))
case("iter-kernel-one-too-large", "iter_patches", "kernel 9 on an 8 x 8 image, VALID", KernelTooLargeError,
     r"kernel 9", r"height 8", call=lambda c, o: patchkit.iter_patches(c.img, 9, 1))
case("iter-same-kernel-huge", "iter_patches", "sizes=10**6, padding='SAME', max_memory='64MiB'",
     OutputTooLargeError, r"1000000x1000000", r"available", r"smaller sizes",
     call=lambda c, o: patchkit.iter_patches(np.zeros((1, 4, 4, 1), np.float32), 10**6, 1, padding="SAME", max_memory="64MiB"))
case("iter-backend-gpu", "iter_patches", "backend='GPU'", UnknownBackendError, r"backend", r"'GPU'",
     call=lambda c, o: patchkit.iter_patches(c.img, 4, 4, backend="GPU"))


# ---- the .patches accessor --------------------------------------------------------------------------

def _plain(c):
    return xr.DataArray(np.zeros((3, 4), np.float32), dims=("a", "b"))


case("acc-no-spatial-dims", "DataArray.patches.extract", "dims ('a', 'b')", DimensionError, r"spatial dims",
     r"\('a', 'b'\)", r"rename|spatial_dims=", call=lambda c, o: _plain(c).patches.extract(2, 2))
case("acc-spatial-dims-one", "DataArray.patches.extract", "spatial_dims=('y',)", DimensionError, r"spatial_dims",
     r"\('y',\)", call=lambda c, o: c.da.patches.extract(2, 2, spatial_dims=("y",)))
case("acc-spatial-dims-absent", "DataArray.patches.extract", "spatial_dims=('lat', 'lon') on (band, y, x)",
     DimensionError, r"spatial_dims", r"'lat', 'lon'", call=lambda c, o: c.da.patches.extract(2, 2, spatial_dims=("lat", "lon")))
case("acc-spatial-dims-string", "DataArray.patches.extract", "spatial_dims='y' (a string)", DimensionError,
     r"spatial_dims", r"\('y',\)", call=lambda c, o: c.da.patches.extract(2, 2, spatial_dims="y"))
case("acc-channel-dims-absent", "DataArray.patches.extract", "channel_dims=('time',)", DimensionError,
     r"channel_dims", r"'time'", call=lambda c, o: c.da.patches.extract(2, 2, channel_dims=("time",)))
case("acc-empty-y", "DataArray.patches.extract", "y of length 0", DimensionError, r"spatial dim 'y'",
     r"length 0", r"select", call=lambda c, o: c.da.isel(y=slice(0, 0)).patches.extract(2, 2))
case("acc-rotated", "DataArray.patches.extract", "a rotated grid (30 degrees)", GeoreferenceError,
     r"transform", r"b=-?\d", r"warp|reproject", call=lambda c, o: c.rotated.patches.extract(4, 4))
for id, value in [("acc-fraction-above-one", 1.5), ("acc-fraction-negative", -0.1), ("acc-fraction-nan", math.nan),
                  ("acc-fraction-bool", True), ("acc-fraction-text", "most")]:
    case(id, "DataArray.patches.extract", f"max_nodata_fraction={value!r}", PatchkitValueError,
         r"max_nodata_fraction", literal(value),
         call=lambda c, o, value=value: c.da.patches.extract(4, 4, max_nodata_fraction=value))
case("acc-chunk-memory", "DataArray.patches.extract", "chunk_memory='tiny'", InvalidMemoryError, r"chunk_memory",
     r"'tiny'", call=lambda c, o: c.lazy.patches.extract(4, 4, chunk_memory="tiny"))
case("acc-padding-reflect", "DataArray.patches.extract", "padding='reflect'", InvalidSpecError, r"padding",
     r"'reflect'", call=lambda c, o: c.da.patches.extract(4, 4, padding="reflect"))
case("acc-dtype-object", "DataArray.patches.extract", "a DataArray of dtype object", UnsupportedDtypeError,
     r"images|dtype", r"object", r"convert",
     call=lambda c, o: xr.DataArray(np.zeros((4, 4), object), dims=("y", "x")).patches.extract(2, 2))
case("acc-dataset-no-spatial", "Dataset.patches.extract", "a Dataset without spatial variables", DimensionError,
     r"spatial dims", r"\('t',\)", call=lambda c, o: xr.Dataset({"v": ("t", [1, 2])}).patches.extract(2, 2))
case("acc-same-kernel-huge", "DataArray.patches.extract", "sizes=10**6, padding='SAME'", OutputTooLargeError,
     r"\(2, 12, 10, 1000000000000\)", r"available", r"stream|smaller sizes",
     call=lambda c, o: c.da.patches.extract(10**6, 1, padding="SAME"))
case("acc-grid-huge", "DataArray.patches.grid", "a 100,000 x 100,000 scene at stride 1", OutputTooLargeError,
     r"table of 99997 x 99997", r"available", r"larger stride",
     call=lambda c, o: xr.DataArray(np.broadcast_to(np.float32(0), (10**5, 10**5)), dims=("y", "x")).patches.grid(4, 1))
case("acc-grid-under-file", "DataArray.patches.grid", "path under a regular file", SinkWriteError, r"path",
     r"a-file\.txt", output="path", at=lambda c, o: c.file / "grid.gpkg",
     call=lambda c, o: c.da.patches.grid(4, 4, path=c.file / "grid.gpkg"))
case("acc-grid-suffix", "DataArray.patches.grid", "path='grid.xyz' (unknown format)", PatchkitValueError, r"path",
     r"grid\.xyz", output="path", at=lambda c, o: o.parent / "grid.xyz",
     call=lambda c, o: c.da.patches.grid(4, 4, path=o.parent / "grid.xyz"))
case("acc-truncated", "DataArray.patches.extract", "a truncated GeoTIFF (opened lazily)", SourceReadError,
     r"truncated\.tif", r"failed", r"re-download|re-create",
     call=lambda c, o: __import__("rioxarray").open_rasterio(c.truncated).patches.extract(4, 4))
case("acc-iter-memory-zero", "DataArray.patches.iter", "max_memory=0", InvalidMemoryError, r"max_memory", r"=0\b",
     call=lambda c, o: c.da.patches.iter(4, 4, max_memory=0))
case("acc-iter-sizes-three", "DataArray.patches.iter", "sizes=(4, 4, 4)", InvalidSpecError, r"sizes",
     r"\(4, 4, 4\)", call=lambda c, o: c.da.patches.iter((4, 4, 4), 4))
case("acc-iter-backend", "DataArray.patches.iter", "backend='jax'", UnknownBackendError, r"backend", r"'jax'",
     call=lambda c, o: next(c.da.patches.iter(4, 4, backend="jax")))

# ---- Zarr sink ----------------------------------------------------------------------------------------

ZARR = "DataArray.patches.to_zarr"
case("zarr-mode", ZARR, "mode='a'", PatchkitValueError, r"mode", r"'a'", output="zarr",
     call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, mode="a", progress=False))
case("zarr-compression-text", ZARR, "compression='lz4'", PatchkitValueError, r"compression", r"'lz4'", output="zarr",
     call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, compression="lz4", progress=False))
case("zarr-compression-int", ZARR, "compression=5", PatchkitValueError, r"compression", r"=5\b", output="zarr",
     call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, compression=5, progress=False))
for id, value in [("zarr-chunk-zero", 0), ("zarr-chunk-fraction", 2.5), ("zarr-chunk-bool", True)]:
    case(id, ZARR, f"chunk_patches={value!r}", PatchkitValueError, r"chunk_patches", literal(value), output="zarr",
         call=lambda c, o, value=value: c.da.patches.to_zarr(o, 4, 4, chunk_patches=value, progress=False))
case("zarr-under-file", ZARR, "store under a regular file", SinkWriteError, r"Zarr store|store", r"a-file\.txt",
     output="zarr", at=lambda c, o: c.file / "p.zarr", call=lambda c, o: c.da.patches.to_zarr(c.file / "p.zarr", 4, 4, progress=False))
case("zarr-read-only", ZARR, "store in a read-only folder", SinkWriteError, r"Zarr store|store", r"<read-only>|p\.zarr",
     output="zarr", at=lambda c, o: c.readonly / "p.zarr", needs=("readonly",),
     call=lambda c, o: c.da.patches.to_zarr(c.readonly / "p.zarr", 4, 4, progress=False))
case("zarr-foreign-folder", ZARR, "store = a folder of other files", ForeignStoreError, r"Zarr store",
     r"foreign", r"mode='w'", output="zarr", at=lambda c, o: c.foreign,
     call=lambda c, o: c.da.patches.to_zarr(c.foreign, 4, 4, progress=False))
case("zarr-existing-file", ZARR, "store = an existing file", ForeignStoreError, r"Zarr store", r"a-file\.txt",
     r"mode='w'", output="zarr", at=lambda c, o: c.file, call=lambda c, o: c.da.patches.to_zarr(c.file, 4, 4, progress=False))
case("zarr-memory-tiny", ZARR, "max_memory='100B'", BudgetTooSmallError, r"max_memory", r"='100B'", output="zarr",
     call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, max_memory="100B", progress=False))
case("zarr-scheduler-type", ZARR, "scheduler=42", PatchkitTypeError, r"scheduler", r"=42\b", r"address|Client",
     output="zarr", call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, scheduler=42, progress=False))
case("zarr-scheduler-blank", ZARR, "scheduler=' '", PatchkitTypeError, r"scheduler", r"=' '", r"address|Client",
     output="zarr", call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, scheduler=" ", progress=False))
case("zarr-truncated", ZARR, "a truncated GeoTIFF, read in dask chunks", SourceReadError, r"truncated\.tif",
     r"failed", r"re-download|re-create", output="zarr",
     call=lambda c, o: __import__("rioxarray").open_rasterio(c.truncated, chunks={"y": 10}).patches.to_zarr(o, 4, 4, progress=False))
case("zarr-remote-500", ZARR, "a COG over HTTP whose tile reads the server answers with 500", SourceReadError,
     r"'http://127\.0\.0\.1:<port>/broken\.tif'", r"HTTP 500 Internal Server Error", r"Check the URL, the server and the network",
     output="zarr", call=lambda c, o: quick_http(lambda: __import__("rioxarray").open_rasterio(c.url_broken, chunks={"y": 128})
                                                 .patches.to_zarr(o, 64, 64, progress=False)))
case("zarr-fraction", ZARR, "max_nodata_fraction=2", PatchkitValueError, r"max_nodata_fraction", r"=2\b",
     output="zarr", call=lambda c, o: c.da.patches.to_zarr(o, 4, 4, max_nodata_fraction=2, progress=False))
case("zarr-store-none", ZARR, "store=None", PatchkitTypeError, r"store", r"None",
     call=lambda c, o: c.da.patches.to_zarr(None, 4, 4, progress=False))
case("zarr-direct-spec-tuple", "sinks.zarr.to_zarr", "spec=(4, 4) instead of a PatchSpec", PatchkitTypeError,
     r"spec", r"\(4, 4\)", r"PatchSpec\(", output="zarr",
     call=lambda c, o: __import__("patchkit.sinks.zarr").sinks.zarr.to_zarr(c.da, o, (4, 4), progress=False))
case("zarr-direct-numpy", "sinks.zarr.to_zarr", "obj = a numpy array", PatchkitTypeError, r"obj",
     r"ndarray", r"wrap|xr\.DataArray", output="zarr",
     call=lambda c, o: __import__("patchkit.sinks.zarr").sinks.zarr.to_zarr(c.img, o, PatchSpec(4, 4), progress=False))
OPEN = "open_patches"
case("open-missing", OPEN, "a path that does not exist", IncompleteStoreError, r"Zarr store", r"missing\.zarr",
     call=lambda c, o: patchkit.open_patches(o.parent / "missing.zarr"))
case("open-incomplete", OPEN, "a store whose run stopped", IncompleteStoreError, r"Zarr store", r"partial\.zarr",
     r"run the same", call=lambda c, o: patchkit.open_patches(c.zarr_partial))
case("open-file", OPEN, "a regular file", IncompleteStoreError, r"Zarr store|store", r"a-file\.txt",
     call=lambda c, o: patchkit.open_patches(c.file))
case("open-foreign-folder", OPEN, "a folder of other files", IncompleteStoreError, r"Zarr store|store",
     r"foreign", call=lambda c, o: patchkit.open_patches(c.foreign))
case("open-plain-zarr", OPEN, "a Zarr store written by xarray, not patchkit", IncompleteStoreError,
     r"not one written by patchkit", r"plain\.zarr", call=lambda c, o: patchkit.open_patches(c.zarr_plain))
case("open-verify", OPEN, "verify='fast'", PatchkitValueError, r"verify", r"'fast'",
     call=lambda c, o: patchkit.open_patches(c.zarr_done, verify="fast"))
case("open-none", OPEN, "store=None", PatchkitTypeError, r"store", r"None", call=lambda c, o: patchkit.open_patches(None))

# ---- GeoTIFF chips ------------------------------------------------------------------------------------

GTIFF = "DataArray.patches.to_geotiffs"
case("gtiff-compress-unknown", GTIFF, "compress='zip'", PatchkitValueError, r"compress", r"'zip'", output="geotiff",
     call=lambda c, o: c.da.patches.to_geotiffs(o, 4, 4, compress="zip", progress=False))
case("gtiff-compress-int", GTIFF, "compress=9", PatchkitValueError, r"compress", r"=9\b", output="geotiff",
     call=lambda c, o: c.da.patches.to_geotiffs(o, 4, 4, compress=9, progress=False))
case("gtiff-mode", GTIFF, "mode='x'", PatchkitValueError, r"mode", r"'x'", output="geotiff",
     call=lambda c, o: c.da.patches.to_geotiffs(o, 4, 4, mode="x", progress=False))
case("gtiff-dataset", "Dataset.patches.to_geotiffs", "a Dataset of two variables", DimensionError, r"obj|Dataset",
     r"'a', 'b'|\['a', 'b'\]", output="geotiff",
     call=lambda c, o: xr.Dataset({"a": c.da, "b": c.da}).patches.to_geotiffs(o, 4, 4, progress=False))
case("gtiff-under-file", GTIFF, "folder under a regular file", SinkWriteError, r"chip folder|folder", r"a-file\.txt",
     output="geotiff", at=lambda c, o: c.file / "chips",
     call=lambda c, o: c.da.patches.to_geotiffs(c.file / "chips", 4, 4, progress=False))
case("gtiff-read-only", GTIFF, "folder in a read-only folder", SinkWriteError, r"chip folder|folder", r"<read-only>|chips",
     output="geotiff", at=lambda c, o: c.readonly / "chips", needs=("readonly",),
     call=lambda c, o: c.da.patches.to_geotiffs(c.readonly / "chips", 4, 4, progress=False))
case("gtiff-foreign-folder", GTIFF, "folder holding other files", ForeignStoreError, r"chip folder", r"foreign",
     r"mode='w'", output="geotiff", at=lambda c, o: c.foreign,
     call=lambda c, o: c.da.patches.to_geotiffs(c.foreign, 4, 4, progress=False))
case("gtiff-bool", GTIFF, "a bool DataArray (GDAL has no bool)", UnsupportedDtypeError, r"dtype", r"bool",
     output="geotiff", call=lambda c, o: c.da.astype(bool).patches.to_geotiffs(o, 4, 4, progress=False))
case("gtiff-float16", GTIFF, "a float16 DataArray", UnsupportedDtypeError, r"dtype", r"float16", output="geotiff",
     call=lambda c, o: c.da.astype("float16").patches.to_geotiffs(o, 4, 4, progress=False))
case("gtiff-rotated", GTIFF, "a rotated grid", GeoreferenceError, r"transform", r"b=-?\d", r"warp|reproject",
     output="geotiff", call=lambda c, o: c.rotated.patches.to_geotiffs(o, 4, 4, progress=False))
case("gtiff-shuffled-y", GTIFF, "y coordinates out of order", GeoreferenceError, r"pixel centres",
     r"not evenly spaced", r"resample", output="geotiff",
     call=lambda c, o: c.da.assign_coords(y=c.da.y.values[::-1][np.r_[1, 0, 2:c.da.sizes["y"]]]).patches.to_geotiffs(o, 4, 4, progress=False))
case("gtiff-direct-spec", "sinks.geotiff.to_geotiffs", "spec={'sizes': 4} (a dict)", PatchkitTypeError, r"spec",
     r"\{'sizes': 4\}", r"PatchSpec\(", output="geotiff",
     call=lambda c, o: __import__("patchkit.sinks.geotiff").sinks.geotiff.to_geotiffs(c.da, o, {"sizes": 4}, progress=False))
READ_INDEX = "sinks.geotiff.read_index"
case("index-missing", READ_INDEX, "a folder that does not exist", IncompleteStoreError, r"chip folder",
     r"missing", call=lambda c, o: __import__("patchkit.sinks.geotiff").sinks.geotiff.read_index(o.parent / "missing"))
case("index-incomplete", READ_INDEX, "a folder whose run stopped", IncompleteStoreError, r"chip folder",
     r"partial-chips", r"run the same", call=lambda c, o: __import__("patchkit.sinks.geotiff").sinks.geotiff.read_index(c.chips_partial))
case("index-verify", READ_INDEX, "verify='quick'", PatchkitValueError, r"verify", r"'quick'",
     call=lambda c, o: __import__("patchkit.sinks.geotiff").sinks.geotiff.read_index(c.chips_partial, verify="quick"))
case("index-none", READ_INDEX, "folder=None", PatchkitTypeError, r"folder", r"None",
     call=lambda c, o: __import__("patchkit.sinks.geotiff").sinks.geotiff.read_index(None))

# ---- TFRecord and tf.data -----------------------------------------------------------------------------

TFR = "to_tfrecord"
TF = ("tf",)
case("tfr-compression", TFR, "compression='BZIP2'", PatchkitValueError, r"compression", r"'BZIP2'", output="tfrecord",
     needs=TF, call=lambda c, o: patchkit.to_tfrecord(c.da, o, 4, 4, compression="BZIP2", progress=False))
case("tfr-mode", TFR, "mode='append'", PatchkitValueError, r"mode", r"'append'", output="tfrecord", needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, o, 4, 4, mode="append", progress=False))
case("tfr-shard-zero", TFR, "shard_size=0", InvalidMemoryError, r"shard_size", r"=0\b", output="tfrecord", needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, o, 4, 4, shard_size=0, progress=False))
case("tfr-shard-text", TFR, "shard_size='big'", InvalidMemoryError, r"shard_size", r"'big'", output="tfrecord",
     needs=TF, call=lambda c, o: patchkit.to_tfrecord(c.da, o, 4, 4, shard_size="big", progress=False))
case("tfr-memory-1e999", TFR, "max_memory='1e999'", InvalidMemoryError, r"max_memory", r"'1e999'",
     output="tfrecord", needs=TF, call=lambda c, o: patchkit.to_tfrecord(c.da, o, 4, 4, max_memory="1e999", progress=False))
case("tfr-numpy", TFR, "obj = a numpy array", PatchkitTypeError, r"obj", r"ndarray", r"wrap|xr\.DataArray",
     output="tfrecord", needs=TF, call=lambda c, o: patchkit.to_tfrecord(c.img, o, 4, 4, progress=False))
case("tfr-prefix-empty", TFR, "prefix=''", PatchkitValueError, r"prefix", r"''", needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, "", 4, 4, progress=False))
case("tfr-prefix-none", TFR, "prefix=None", PatchkitTypeError, r"prefix", r"None", needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, None, 4, 4, progress=False))
case("tfr-under-file", TFR, "prefix under a regular file", SinkWriteError, r"TFRecord folder|folder",
     r"a-file\.txt", output="tfrecord", at=lambda c, o: c.file / "p", needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, c.file / "p", 4, 4, progress=False))
case("tfr-read-only", TFR, "prefix in a read-only folder", SinkWriteError, r"TFRecord|folder", r"<read-only>|p\.json",
     output="tfrecord", at=lambda c, o: c.readonly / "p", needs=TF + ("readonly",),
     call=lambda c, o: patchkit.to_tfrecord(c.da, c.readonly / "p", 4, 4, progress=False))
case("tfr-foreign-manifest", TFR, "prefix whose .json is not a patchkit manifest", ForeignStoreError, r"manifest",
     r"other\.json", r"mode='w'|another prefix", output="tfrecord", at=lambda c, o: c.tfr_foreign, needs=TF,
     call=lambda c, o: patchkit.to_tfrecord(c.da, c.tfr_foreign, 4, 4, progress=False))
case("tfr-reserved-name", "Dataset.patches.to_tfrecord", "a Dataset with a variable named 'row'", PatchkitValueError,
     r"variable 'row'", r"'row'", r"rename", output="tfrecord", needs=TF,
     call=lambda c, o: xr.Dataset({"row": c.da, "b": c.da}).patches.to_tfrecord(o, 4, 4, progress=False))
READ_TFR = "read_tfrecord"
case("readtfr-missing", READ_TFR, "a prefix with nothing written", IncompleteStoreError, r"manifest|TFRecord",
     r"nothing", needs=TF, call=lambda c, o: patchkit.read_tfrecord(o.parent / "nothing"))
case("readtfr-incomplete", READ_TFR, "a set whose run stopped", IncompleteStoreError, r"TFRecord set",
     r"partial", r"run\b", needs=TF, call=lambda c, o: patchkit.read_tfrecord(c.tfr_partial))
case("readtfr-verify", READ_TFR, "verify='yes'", PatchkitValueError, r"verify", r"'yes'", needs=TF,
     call=lambda c, o: patchkit.read_tfrecord(c.tfr_partial, verify="yes"))
case("readtfr-foreign", READ_TFR, "a .json that is not a patchkit manifest", ForeignStoreError, r"manifest",
     r"other\.json", needs=TF, call=lambda c, o: patchkit.read_tfrecord(c.tfr_foreign))
TFDS = "to_tf_dataset"
for id, key, value in [("tfds-batch-zero", "batch_size", 0), ("tfds-batch-fraction", "batch_size", 2.5),
                       ("tfds-batch-bool", "batch_size", True), ("tfds-shuffle-negative", "shuffle_buffer", -1)]:
    case(id, TFDS, f"{key}={value!r}", PatchkitValueError, key, literal(value), needs=TF,
         call=lambda c, o, key=key, value=value: patchkit.to_tf_dataset(c.da, 4, 4, **{key: value}))
case("tfds-sizes-only", TFDS, "sizes without strides", PatchkitValueError, r"strides", r"None", needs=TF,
     call=lambda c, o: patchkit.to_tf_dataset(c.da, 4))
case("tfds-numpy-scene", TFDS, "a numpy array with sizes", PatchkitTypeError, r"source", r"ndarray", needs=TF,
     call=lambda c, o: patchkit.to_tf_dataset(c.img, 4, 4))
case("tfds-missing-store", TFDS, "a store path that does not exist", PatchkitValueError, r"source",
     r"missing\.zarr", needs=TF, call=lambda c, o: patchkit.to_tf_dataset(str(o.parent / "missing.zarr")))
case("tfds-fraction-on-store", TFDS, "max_nodata_fraction with a store of patches", PatchkitValueError,
     r"max_nodata_fraction", r"0\.5", needs=TF, call=lambda c, o: patchkit.to_tf_dataset(c.zarr_done, max_nodata_fraction=0.5))
case("tfds-incomplete-store", TFDS, "a store whose run stopped", IncompleteStoreError, r"Zarr store",
     r"partial\.zarr", needs=TF, call=lambda c, o: patchkit.to_tf_dataset(c.zarr_partial))
case("tfds-memory", "DataArray.patches.to_tf_dataset", "max_memory='lots'", InvalidMemoryError, r"max_memory",
     r"'lots'", needs=TF, call=lambda c, o: c.da.patches.to_tf_dataset(4, 4, max_memory="lots"))

# ---- stitch -------------------------------------------------------------------------------------------

STITCH = "stitch"


def _numpy_patches(c):
    return patchkit.extract_patches(c.img, 4, 2)


def stitch_np(c, **kwargs):
    kwargs = {"spec": PatchSpec(4, 2), "image_shape": (8, 8), **kwargs}
    return patchkit.stitch(_numpy_patches(c), **kwargs)


for id, blend, error, expect in [
    ("stitch-blend-unknown", "median", PatchkitValueError, r"'median'"),
    ("stitch-blend-int", 3, PatchkitTypeError, r"blend=3"),
    ("stitch-blend-tuple", ("tukey", "wide"), PatchkitValueError, r"\('tukey', 'wide'\)"),
]:
    case(id, STITCH, f"blend={blend!r}", error, r"blend", expect, call=lambda c, o, blend=blend: stitch_np(c, blend=blend))
case("stitch-blend-shape", STITCH, "a blend callable giving weights of shape (2, 2)", PatchkitValueError, r"blend",
     r"shape \(2, 2\)", r"must return", call=lambda c, o: stitch_np(c, blend=lambda kh, kw: np.ones((2, 2))))
case("stitch-blend-negative", STITCH, "a blend callable giving negative weights", PatchkitValueError, r"blend",
     r"-1\.0", r"clip", call=lambda c, o: stitch_np(c, blend=lambda kh, kw: -np.ones((kh, kw))))
for id, crop in [("stitch-crop-negative", -1), ("stitch-crop-fraction", 2.5), ("stitch-crop-three", (1, 2, 3)),
                 ("stitch-crop-too-large", 100)]:
    case(id, STITCH, f"crop={crop!r}", PatchkitValueError, r"crop", literal(crop), r"must|at most|e\.g\.",
         call=lambda c, o, crop=crop: stitch_np(c, crop=crop))
case("stitch-no-spec", STITCH, "numpy patches without spec and image_shape", PatchkitValueError,
     r"spec and image_shape", r"ndarray", call=lambda c, o: patchkit.stitch(_numpy_patches(c)))
case("stitch-spec-text", STITCH, "spec='16'", PatchkitTypeError, r"spec", r"'16'", call=lambda c, o: stitch_np(c, spec="16"))
case("stitch-spec-dict", STITCH, "spec={'sizes': 4}", InvalidSpecError, r"spec", r"'strides'",
     call=lambda c, o: stitch_np(c, spec={"sizes": 4}))
for id, shape in [("stitch-shape-nan", (math.nan, 8)), ("stitch-shape-zero", (0, 8)), ("stitch-shape-bool", (True, 8)),
                  ("stitch-shape-one", (8,)), ("stitch-shape-fraction", (8.5, 8)), ("stitch-shape-text", ("a", "b"))]:
    case(id, STITCH, f"image_shape={shape!r}", PatchkitValueError, r"image_shape", literal(shape),
         call=lambda c, o, shape=shape: stitch_np(c, image_shape=shape))
case("stitch-shape-huge", STITCH, "image_shape=(10**12, 10**12)", PatchkitValueError, r"image_shape|shape",
     r"1000000000000", call=lambda c, o: stitch_np(c, image_shape=(10**12, 10**12)))
case("stitch-spec-mismatch", STITCH, "patches cut at stride 2, spec says stride 4", PatchkitValueError, r"patches",
     r"\(1, 3, 3, 32\)", call=lambda c, o: stitch_np(c, spec=PatchSpec(4, 4)))
case("stitch-fill-uint8", STITCH, "fill_value=300 for uint8 patches", PatchkitValueError, r"fill_value", r"300",
     call=lambda c, o: patchkit.stitch(patchkit.extract_patches(c.img.astype(np.uint8), 4, 2), spec=PatchSpec(4, 2),
                                       image_shape=(8, 8), fill_value=300))
case("stitch-fill-text", STITCH, "fill_value='zero'", PatchkitValueError, r"fill_value", r"'zero'",
     call=lambda c, o: stitch_np(c, fill_value="zero"))
case("stitch-sum-fill", STITCH, "blend='sum' with fill_value=5", PatchkitValueError, r"fill_value", r"=5\b",
     call=lambda c, o: stitch_np(c, blend="sum", fill_value=5))
case("stitch-out-png", STITCH, "out='result.png'", PatchkitValueError, r"out", r"result\.png", output="path",
     at=lambda c, o: Path("result.png"), call=lambda c, o: stitch_np(c, out="result.png"))
case("stitch-out-png-deep", STITCH, "out='<a folder 100 characters deep>/result.png'", PatchkitValueError, r"out",
     r"result\.png", output="path", at=lambda c, o: c.deep / "result.png", call=lambda c, o: stitch_np(c, out=c.deep / "result.png"))
case("stitch-out-int", STITCH, "out=123", PatchkitValueError, r"out", r"123", call=lambda c, o: stitch_np(c, out=123))
case("stitch-out-under-file", STITCH, "out under a regular file", SinkWriteError, r"out", r"a-file\.txt",
     output="path", at=lambda c, o: c.file / "s.tif", call=lambda c, o: stitch_np(c, out=c.file / "s.tif"))
case("stitch-out-read-only", STITCH, "out in a read-only folder", SinkWriteError, r"out", r"<read-only>",
     output="path", at=lambda c, o: c.readonly / "s.tif", needs=("readonly",),
     call=lambda c, o: stitch_np(c, out=c.readonly / "s.tif"))
case("stitch-out-folder-tif", STITCH, "out = an existing folder named x.tif", SinkWriteError, r"out", r"x\.tif",
     r"remove it", call=lambda c, o: stitch_np(c, out=c.folder_tif))
case("stitch-out-file-zarr", STITCH, "out = an existing file named x.zarr", SinkWriteError, r"out", r"x\.zarr",
     r"remove it", call=lambda c, o: stitch_np(c, out=c.file_zarr))
case("stitch-memory-tiny", STITCH, "max_memory='1B'", BudgetTooSmallError, r"max_memory", r"'1B'",
     call=lambda c, o: stitch_np(c, max_memory="1B"))
case("stitch-memory-nan", STITCH, "max_memory=nan", InvalidMemoryError, r"max_memory", r"nan",
     call=lambda c, o: stitch_np(c, max_memory=math.nan))
case("stitch-dataset", STITCH, "patches = a Dataset", PatchkitTypeError, r"patches", r"Dataset",
     call=lambda c, o: patchkit.stitch(c.patches.to_dataset(name="p")))
case("stitch-no-patch-dims", STITCH, "a DataArray with dims (band, y, x), and a spec", DimensionError, r"patches",
     r"\('band', 'y', 'x'\)", call=lambda c, o: patchkit.stitch(c.da, spec=PatchSpec(4, 4), image_shape=(12, 10)))
case("stitch-lost-attrs", STITCH, "labelled patches whose attrs were dropped", PatchkitValueError,
     r"patchkit_spec", r"None", call=lambda c, o: patchkit.stitch(c.patches.drop_attrs()))
case("stitch-wrong-sizes", STITCH, "labelled 4 x 4 patches, spec sizes 3", PatchkitValueError, r"spec",
     r"4x4", call=lambda c, o: patchkit.stitch(c.patches, spec=PatchSpec(3, 3), image_shape=(12, 10)))
case("stitch-string-patches", STITCH, "patches='abc' with a spec", UnsupportedDtypeError, r"patches", r"<U3",
     call=lambda c, o: patchkit.stitch("abc", spec=PatchSpec(4, 2), image_shape=(8, 8)))
case("stitch-object-patches", STITCH, "patches of dtype object", UnsupportedDtypeError, r"patches", r"object",
     r"convert", call=lambda c, o: patchkit.stitch(_numpy_patches(c).astype(object), spec=PatchSpec(4, 2), image_shape=(8, 8)))

# ---- predict -------------------------------------------------------------------------------------------------

PREDICT = "predict"


def predict_np(c, model=lambda batch: batch, **kwargs):
    return patchkit.predict(c.img + 1, model, 4, 2, **kwargs)


def _raises(batch):
    raise RuntimeError("out of memory on cuda:0")


case("predict-model-path", PREDICT, "model='model.keras' (a path, not a model)", PatchkitTypeError, r"model",
     r"'model\.keras'", r"load_model", call=lambda c, o: predict_np(c, model="model.keras"))
case("predict-batch-zero", PREDICT, "batch_size=0", PatchkitValueError, r"batch_size", r"=0\b",
     call=lambda c, o: predict_np(c, batch_size=0))
case("predict-nan-policy", PREDICT, "nan_policy='omit'", PatchkitValueError, r"nan_policy", r"'omit'",
     call=lambda c, o: predict_np(c, nan_policy="omit"))
case("predict-sigma-mean", PREDICT, "sigma_scale=0.2 with blend='mean'", PatchkitValueError, r"sigma_scale",
     r"0\.2", r"blend='gaussian'", call=lambda c, o: predict_np(c, sigma_scale=0.2, blend="mean"))
case("predict-dtype", PREDICT, "dtype='lots'", UnsupportedDtypeError, r"dtype", r"'lots'",
     call=lambda c, o: predict_np(c, dtype="lots"))
case("predict-out-png", PREDICT, "out='prediction.png'", PatchkitValueError, r"out", r"prediction\.png", output="path",
     at=lambda c, o: Path("prediction.png"), call=lambda c, o: predict_np(c, out="prediction.png"))
case("predict-max-memory", PREDICT, "max_memory='1KiB'", BudgetTooSmallError, r"max_memory", r"'1KiB'",
     call=lambda c, o: predict_np(c, max_memory="1KiB"))
case("predict-gpu-memory", PREDICT, "gpu_memory='256B', below one batch", BudgetTooSmallError, r"gpu_memory",
     r"'256B'", call=lambda c, o: predict_np(c, gpu_memory="256B"))
case("predict-dataset", PREDICT, "a Dataset", PatchkitTypeError, r"source", r"Dataset", r"ds\[name\]",
     call=lambda c, o: patchkit.predict(c.da.to_dataset(name="scene"), lambda b: b, 4, 2))
case("predict-model-raises", PREDICT, "a model that raises part way, out='p.tif'", ModelError, r"model raised",
     r"RuntimeError: out of memory", r"fix the model", output="path", at=lambda c, o: o.with_suffix(".tif"),
     call=lambda c, o: predict_np(c, model=_raises, out=o.with_suffix(".tif")))
case("predict-model-nan", PREDICT, "a model returning NaN", ModelError, r"NaN", r"batch of patches",
     r"nan_policy='propagate'", call=lambda c, o: predict_np(c, model=lambda b: b * np.nan))
case("predict-model-centre", PREDICT, "a model returning the centre, no crop", PatchkitValueError, r"2x2 pixels",
     r"4x4 patches", r"crop=\(1, 1\)", call=lambda c, o: predict_np(c, model=lambda b: b[:, 1:-1, 1:-1]))
case("predict-model-batch", PREDICT, "a model dropping a patch of each batch", PatchkitValueError, r"model returned",
     r"this batch of \d+ patches", r"one prediction per patch",
     call=lambda c, o: predict_np(c, model=lambda b: b[:-1] if len(b) > 1 else b, batch_size=3))
case("predict-backend-cupy", PREDICT, "backend='cupy' without CuPy or a GPU", BackendUnavailableError, r"cupy",
     r"CuPy", r"install|use backend='numpy'", call=lambda c, o: predict_np(c, backend="cupy"),
     needs=("no-cupy",))
case("predict-model-squeezed", PREDICT, "a model reducing the batch axis", PatchkitValueError, r"model returned shape",
     r"keep the batch axis", call=lambda c, o: predict_np(c, model=lambda b: b.mean(0)))

# ---- patch_transform, calibrate, the Keras layer --------------------------------------------------------

case("transform-out-of-grid", "patch_transform", "patch (99, 99)", PatchIndexError, r"\(99, 99\)", r"grid",
     call=lambda c, o: patchkit.patch_transform(c.patches, 99, 99))
case("transform-numpy", "patch_transform", "a numpy array", PatchkitTypeError, r"patches", r"ndarray",
     call=lambda c, o: patchkit.patch_transform(c.img, 0, 0))
case("transform-no-coords", "patch_transform", "patches without coordinates", GeoreferenceError, r"patch_transform",
     r"dims", call=lambda c, o: patchkit.patch_transform(c.patches.drop_vars(["y", "x"]), 0, 0))
case("calibrate-device", "backends.calibrate", "device='nonsense'", PatchkitValueError, r"device", r"'nonsense'",
     needs=TF, call=lambda c, o: __import__("patchkit.core.backends").backends.calibrate("nonsense"))
case("calibrate-repeats", "backends.calibrate", "repeats=0", PatchkitValueError, r"repeats", r"=0\b",
     needs=TF, call=lambda c, o: __import__("patchkit.core.backends").backends.calibrate("/device:CPU:0", repeats=0))
case("keras-sizes-zero", "keras.ExtractPatches", "ExtractPatches(0, 1)", InvalidSpecError, r"sizes", r"=0\b",
     needs=TF, call=lambda c, o: __import__("patchkit.keras").keras.ExtractPatches(0, 1))
case("keras-padding", "keras.ExtractPatches", "padding='full'", InvalidSpecError, r"padding", r"'full'",
     needs=TF, call=lambda c, o: __import__("patchkit.keras").keras.ExtractPatches(16, 8, padding="full"))

# ---- patchkit.testing -----------------------------------------------------------------------------------

case("testing-scene-rank", "testing.lazy_scene", "shape (1, 10, 10)", InvalidImageError, r"shape", r"\(1, 10, 10\)",
     call=lambda c, o: patchkit.testing.lazy_scene((1, 10, 10)))
case("testing-scene-negative", "testing.lazy_scene", "shape (1, -5, 10, 1)", InvalidImageError, r"shape", r"-5",
     call=lambda c, o: patchkit.testing.lazy_scene((1, -5, 10, 1)))
case("testing-scene-chunks", "testing.lazy_scene", "chunks=(0, 4)", PatchkitValueError, r"chunks", r"\(0, 4\)",
     call=lambda c, o: patchkit.testing.lazy_scene((1, 10, 10, 1), chunks=(0, 4)))
case("testing-scene-dtype", "testing.lazy_scene", "dtype='object'", UnsupportedDtypeError, r"dtype", r"object",
     call=lambda c, o: patchkit.testing.lazy_scene((1, 10, 10, 1), dtype="object"))
case("testing-assert-sizes", "testing.assert_matches_tensorflow", "sizes=0", InvalidSpecError, r"sizes", r"=0\b",
     call=lambda c, o: patchkit.testing.assert_matches_tensorflow(c.img, 0, 1))
case("testing-reference-padding", "testing.reference_patches", "padding='FULL'", InvalidSpecError, r"padding",
     r"'FULL'", call=lambda c, o: patchkit.testing.reference_patches(c.img, 4, 4, padding="FULL"))

# ---- the explorer's model (no widgets) ---------------------------------------------------------------------


def widgets():
    import patchkit.explorer as w

    return w


MODEL = "explorer.ExplorerModel"
case("model-shape-rank", MODEL, "shape=(10, 10)", InvalidImageError, r"shape", r"\(10, 10\)",
     call=lambda c, o: widgets().ExplorerModel((10, 10), "uint8"))
case("model-shape-empty", MODEL, "shape=(1, 0, 10, 1)", InvalidImageError, r"shape", r"\(1, 0, 10, 1\)",
     call=lambda c, o: widgets().ExplorerModel((1, 0, 10, 1), "uint8"))
case("model-dtype", MODEL, "dtype='object'", UnsupportedDtypeError, r"dtype", r"object",
     call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "object"))
case("model-kind", MODEL, "kind='gpu'", PatchkitValueError, r"kind", r"'gpu'",
     call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8", kind="gpu"))
case("model-spec-tuple", MODEL, "spec=(16, 8)", PatchkitTypeError, r"spec", r"\(16, 8\)",
     call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8", spec=(16, 8)))
case("model-fraction", MODEL, "max_nodata_fraction=3", PatchkitValueError, r"max_nodata_fraction", r"=3\b",
     call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8", max_nodata_fraction=3))
case("model-plan-memory", "explorer.ExplorerModel.plan", "max_memory='lots'", InvalidMemoryError, r"max_memory",
     r"'lots'", call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8", spec=PatchSpec(4, 4), max_memory="lots").plan())
case("model-plan-backend", "explorer.ExplorerModel.plan", "backend='cuda'", UnknownBackendError, r"backend",
     r"'cuda'", call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8", spec=PatchSpec(4, 4), backend="cuda").plan())
case("model-update-sizes", "explorer.ExplorerModel.update", "sizes=0", InvalidSpecError, r"sizes", r"=0\b",
     call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8").update(sizes=0))
case("model-update-unknown", "explorer.ExplorerModel.update", "colour='red' (no such field)", PatchkitValueError,
     r"colour", r"'red'", call=lambda c, o: widgets().ExplorerModel((1, 10, 10, 1), "uint8").update(colour="red"))
case("model-of-none", "explorer.ExplorerModel.of", "images=None", PatchkitTypeError, r"images", r"None",
     call=lambda c, o: widgets().ExplorerModel.of(None))
case("model-of-tensor", "explorer.ExplorerModel.of", "an eager tf.Tensor", PatchkitTypeError, r"images",
     r"Tensor", needs=TF, call=lambda c, o: widgets().ExplorerModel.of(c.tf.zeros((1, 8, 8, 1))))
SCENE = "explorer.Scene.open"
case("scene-numpy", SCENE, "obj = a numpy array", PatchkitTypeError, r"obj", r"ndarray",
     call=lambda c, o: widgets().Scene.open(c.img))
case("scene-dataset", SCENE, "obj = a Dataset", DimensionError, r"obj", r"Dataset",
     call=lambda c, o: widgets().Scene.open(c.da.to_dataset(name="v")))
for id, value in [("scene-preview-zero", 0), ("scene-preview-fraction", 2.5), ("scene-preview-inf", math.inf)]:
    case(id, SCENE, f"preview_size={value!r}", PatchkitValueError, r"preview_size", literal(value),
         call=lambda c, o, value=value: widgets().Scene.open(c.da, preview_size=value))
case("jobcode-sink", "explorer.job_code", "sink='s3'", PatchkitValueError, r"sink", r"'s3'",
     call=lambda c, o: widgets().job_code(PatchSpec(4, 4), "s3", "out"))
case("jobcode-spec", "explorer.job_code", "spec=(16, 8)", PatchkitTypeError, r"spec", r"\(16, 8\)",
     call=lambda c, o: widgets().job_code((16, 8), "zarr", "out"))
case("progress-sink", "explorer.sink_progress", "sink='ftp'", PatchkitValueError, r"sink", r"'ftp'",
     call=lambda c, o: widgets().sink_progress("ftp", "out", 3))
case("sinkrun-spec", "explorer.SinkRun", "spec=(16, 8)", PatchkitTypeError, r"spec", r"\(16, 8\)", output="zarr",
     call=lambda c, o: widgets().SinkRun(c.da, "zarr", o, (16, 8)))
case("sinkrun-sink", "explorer.SinkRun", "sink='s3'", PatchkitValueError, r"sink", r"'s3'",
     call=lambda c, o: widgets().SinkRun(c.da, "s3", o, PatchSpec(4, 4)))
EXPLORER = "DataArray.patches.explore"
case("explore-numpy", "explorer.PatchExplorer", "obj = a numpy array", PatchkitTypeError, r"obj", r"ndarray",
     call=lambda c, o: widgets().PatchExplorer(c.img))
case("explore-dataset", "Dataset.patches.explore", "a Dataset", DimensionError, r"obj", r"Dataset",
     call=lambda c, o: c.da.to_dataset(name="v").patches.explore())
case("explore-sizes-zero", EXPLORER, "sizes=0", InvalidSpecError, r"sizes", r"=0\b",
     call=lambda c, o: c.da.patches.explore(0))
case("explore-sink", EXPLORER, "sink='s3'", PatchkitValueError, r"sink", r"'s3'", needs=("widgets",),
     call=lambda c, o: c.da.patches.explore(4, sink="s3"))
case("explore-preview", EXPLORER, "preview_size=-5", PatchkitValueError, r"preview_size", r"-5",
     call=lambda c, o: c.da.patches.explore(4, preview_size=-5))
SET = "explorer.PatchExplorer.set"
for id, values, expect in [
    ("explorer-set-unknown", {"colour": "red"}, r"'colour'"),
    ("explorer-set-sizes-text", {"sizes": "abc"}, r"'abc'"),
    ("explorer-set-sizes-fraction", {"sizes": 2.5}, r"2\.5"),
    ("explorer-set-fraction-text", {"max_nodata_fraction": "lots"}, r"'lots'"),
    ("explorer-set-fraction-high", {"max_nodata_fraction": 5}, r"=5\b"),
]:
    key = next(iter(values))
    case(id, SET, ", ".join(f"{k}={v!r}" for k, v in values.items()), PatchkitValueError, key, expect,
         needs=("widgets",), call=lambda c, o, values=values: c.explorer.set(**values))

# ---- templates (patchkit.jobs.templates) -----------------------------------------------------------------------


def jobs():
    import patchkit.jobs.templates as j

    return j


case("jobs-template-unknown", "jobs.template_path", "name='nope'", PatchkitValueError, r"template", r"'nope'",
     r"patchkit templates", call=lambda c, o: jobs().template_path("nope"))
case("jobs-template-text-file", "jobs.template_path", "a path to a .txt file", PatchkitValueError, r"template",
     r"notes\.txt", r"patchkit templates", call=lambda c, o: jobs().template_path(str(c.text_file)))
case("jobs-parameters-unknown", "jobs.parameters", "name='nope'", PatchkitValueError, r"template", r"'nope'",
     r"patchkit templates", call=lambda c, o: jobs().parameters("nope"))
case("jobs-unknown-parameter", "jobs.check_parameters", "{'sizez': 12}", PatchkitValueError, r"parameter",
     r"'sizez'", r"its parameters are", call=lambda c, o: jobs().check_parameters("extract_patches", {"sizez": 12}))
case("jobs-parameter-type", "jobs.check_parameters", "{'sizes': 'big'}", PatchkitValueError, r"sizes",
     r"'big'", call=lambda c, o: jobs().check_parameters("extract_patches", {"sizes": "big"}))
case("jobs-parameter-bool", "jobs.check_parameters", "{'sizes': True}", PatchkitValueError, r"sizes", r"True",
     call=lambda c, o: jobs().check_parameters("extract_patches", {"sizes": True}))
case("jobs-yaml-malformed", "jobs.read_parameters_file", "a malformed YAML file", ParameterFileError,
     r"bad\.yaml", r"line \d+, column \d+", r"fix that line", call=lambda c, o: jobs().read_parameters_file(c.yaml_bad))
case("jobs-yaml-missing", "jobs.read_parameters_file", "a file that does not exist", ParameterFileError,
     r"parameters file", r"missing\.yaml", call=lambda c, o: jobs().read_parameters_file(o.parent / "missing.yaml"))
case("jobs-yaml-list", "jobs.read_parameters_file", "a YAML list, not a mapping", ParameterFileError,
     r"parameters file", r"\[256, 128\]", call=lambda c, o: jobs().read_parameters_file(c.yaml_list))
case("jobs-yaml-binary", "jobs.read_parameters_file", "a binary file", ParameterFileError, r"parameters file",
     r"binary\.yaml", r"check", call=lambda c, o: jobs().read_parameters_file(c.yaml_binary))
case("jobs-run-unknown-template", "jobs.run_template", "name='nope'", PatchkitValueError, r"template", r"'nope'",
     r"patchkit templates", output="path", call=lambda c, o: jobs().run_template("nope", {}, o))
case("jobs-run-sizes-zero", "jobs.run_template", "{'sizes': 0}", InvalidSpecError, r"sizes", r"=0\b", output="path",
     call=lambda c, o: jobs().run_template("extract_patches", {"sizes": 0}, o, kernel="python3"))
case("jobs-run-sink", "jobs.run_template", "{'sink': 's3'}", PatchkitValueError, r"sink", r"'s3'", output="path",
     call=lambda c, o: jobs().run_template("extract_patches", {"sink": "s3"}, o, kernel="python3"))
case("jobs-run-output-under-file", "jobs.run_template", "output_dir under a regular file", SinkWriteError,
     r"output_dir|output", r"a-file\.txt", output="path", at=lambda c, o: c.file / "out",
     call=lambda c, o: jobs().run_template("extract_patches", {}, c.file / "out", kernel="python3"))

# ---- the command ------------------------------------------------------------------------------------------

SPEC_ARGS = ["--sizes", "4", "--strides", "4"]
cli("cli-no-command", "no command", 2, r"COMMAND", r"required", r"usage", argv=lambda c, o: [], sub=True)
cli("cli-unknown-command", "frobnicate", 2, r"frobnicate", r"invalid choice", r"choose from",
    argv=lambda c, o: ["frobnicate"])
cli("cli-inspect-no-sizes", "inspect scene.tif (no --sizes)", 2, r"--sizes", r"required", r"usage",
    argv=lambda c, o: ["inspect", "scene.tif"])
for id, option, value, status, sub in [
    ("cli-sizes-text", "--sizes", "abc", 2, True),
    ("cli-sizes-1e999", "--sizes", "1e999", 2, False),
    ("cli-sizes-fraction", "--sizes", "2.5", 2, False),
    ("cli-sizes-zero", "--sizes", "0", 1, True),
    ("cli-sizes-negative", "--sizes", "-5", 1, False),
    ("cli-sizes-huge", "--sizes", "1000000000000", 1, False),
    ("cli-strides-three", "--strides", "4,4,4", 2, False),
    ("cli-padding", "--padding", "full", 2, False),
    ("cli-memory-text", "--max-memory", "lots", 1, True),
    ("cli-memory-1e999", "--max-memory", "1e999", 1, False),
    ("cli-memory-zero", "--max-memory", "0", 1, False),
]:
    args = {"--sizes": "4", "--strides": "4", option: value}
    cli(id, f"inspect {option} {value}", status, option.lstrip("-").replace("-", "_") + "|" + option, re.escape(value),
        argv=lambda c, o, args=args: ["inspect", str(c.tif) if c else "t.tif", *[w for kv in args.items() for w in kv]],
        sub=sub)
cli("cli-inspect-fraction-nan", "inspect --max-nodata-fraction nan", 1, r"max_nodata_fraction", r"=nan",
    argv=lambda c, o: ["inspect", str(c.tif) if c else "t.tif", *SPEC_ARGS, "--max-nodata-fraction", "nan"])
cli("cli-inspect-missing", "inspect missing.tif", 1, r"missing\.tif", r"No such file|does not exist",
    r"check the path", argv=lambda c, o: ["inspect", str(o.parent / "missing.tif") if c else "missing.tif", *SPEC_ARGS],
    sub=True)
cli("cli-inspect-not-raster", "inspect notes.txt (not a raster)", 1, r"notes\.txt", r"not recognized|not a raster",
    r"check|pass a raster", argv=lambda c, o: ["inspect", str(c.text_file) if c else "notes.txt", *SPEC_ARGS])
cli("cli-inspect-kernel", "inspect --sizes 100 on a 12 x 10 raster", 1, r"kernel 100", r"height 12",
    argv=lambda c, o: ["inspect", str(c.tif) if c else "t.tif", "--sizes", "100", "--strides", "1"])
cli("cli-inspect-bogus-option", "inspect --bogus", 2, r"--bogus", r"unrecognized arguments", r"usage",
    argv=lambda c, o: ["inspect", "t.tif", *SPEC_ARGS, "--bogus"])


def extract_argv(c, o, *extra, to="zarr", output=None):
    return ["extract", str(c.tif) if c else "t.tif", *SPEC_ARGS, "--to", to, "--output", str(output or o), *extra]


cli("cli-extract-to", "extract --to hdf5", 2, r"--to", r"'hdf5'", r"choose from", argv=lambda c, o: extract_argv(c, o, to="hdf5"),
    sub=True)
cli("cli-extract-no-output", "extract without --output", 2, r"--output", r"required", r"usage",
    argv=lambda c, o: ["extract", "t.tif", *SPEC_ARGS])
cli("cli-extract-mode", "extract --mode a", 2, r"--mode", r"'a'", r"choose from", argv=lambda c, o: extract_argv(c, o, "--mode", "a"))
cli("cli-extract-backend", "extract --backend torch", 2, r"--backend", r"'torch'", r"choose from",
    argv=lambda c, o: extract_argv(c, o, "--backend", "torch"))
cli("cli-extract-under-file", "extract --output under a regular file", 1, r"Zarr store|store", r"a-file\.txt",
    output="zarr", at=lambda c, o: c.file / "p.zarr", argv=lambda c, o: extract_argv(c, o, output=c.file / "p.zarr" if c else None))
cli("cli-extract-foreign", "extract --output a folder of other files", 1, r"Zarr store", r"foreign", r"mode='w'",
    output="zarr", at=lambda c, o: c.foreign, argv=lambda c, o: extract_argv(c, o, output=c.foreign if c else None), sub=True)
cli("cli-extract-truncated", "extract a truncated GeoTIFF", 1, r"truncated\.tif", r"failed|damaged",
    r"re-download|re-create", output="zarr", argv=lambda c, o: ["extract", str(c.truncated) if c else "t.tif", *SPEC_ARGS,
                                                                "--output", str(o)], sub=True)
cli("cli-extract-url-missing", "extract an http URL the server answers 404 to", 1, r"'http://127\.0\.0\.1:<port>/missing\.tif'",
    r"404", r"check the URL, the server and the network", output="zarr",
    argv=lambda c, o: ["extract", c.url_missing if c else "http://127.0.0.1:8000/missing.tif", *SPEC_ARGS, "--output", str(o)])
cli("cli-extract-fraction-high", "extract --max-nodata-fraction 2", 1, r"max_nodata_fraction", r"=2\.0", output="zarr",
    argv=lambda c, o: extract_argv(c, o, "--max-nodata-fraction", "2"))
cli("cli-extract-fraction-nan", "extract --max-nodata-fraction nan", 1, r"max_nodata_fraction", r"nan", output="zarr",
    argv=lambda c, o: extract_argv(c, o, "--max-nodata-fraction", "nan"))
cli("cli-extract-geotiff-read-only", "extract --to geotiff into a read-only folder", 1, r"chip folder|folder",
    r"<read-only>|chips", output="geotiff", at=lambda c, o: c.readonly / "chips", needs=("readonly",),
    argv=lambda c, o: extract_argv(c, o, to="geotiff", output=c.readonly / "chips" if c else None))
cli("cli-extract-scheduler-tfrecord", "extract --to tfrecord --scheduler tcp://h:8786", 1, r"--scheduler",
    r"'tfrecord'", r"leave out --scheduler", output="tfrecord",
    argv=lambda c, o: extract_argv(c, o, "--scheduler", "tcp://h:8786", to="tfrecord"))
cli("cli-run-unknown-template", "run nope", 1, r"template", r"'nope'", r"patchkit templates",
    argv=lambda c, o: ["run", "nope", "--output-dir", str(o) if o else "out"], output="path", sub=True)
cli("cli-run-unknown-parameter", "run extract_patches -p sizez 12", 1, r"parameter", r"'sizez'", r"its parameters are",
    output="path", argv=lambda c, o: ["run", "extract_patches", "-p", "sizez", "12", "--output-dir", str(o) if o else "out"])
cli("cli-run-parameter-type", "run extract_patches -p sizes abc", 1, r"sizes", r"'abc'", output="path",
    argv=lambda c, o: ["run", "extract_patches", "-p", "sizes", "abc", "--output-dir", str(o) if o else "out"])
cli("cli-run-yaml-malformed", "run -f bad.yaml (malformed)", 1, r"bad\.yaml", r"line \d+, column \d+", r"fix that line",
    output="path", argv=lambda c, o: ["run", "extract_patches", "-f", str(c.yaml_bad) if c else "bad.yaml",
                                      "--output-dir", str(o) if o else "out"], sub=True)
cli("cli-run-yaml-missing", "run -f missing.yaml", 1, r"parameters file", r"missing\.yaml", output="path",
    argv=lambda c, o: ["run", "extract_patches", "-f", str(o.parent / "missing.yaml") if o else "missing.yaml",
                       "--output-dir", str(o) if o else "out"])
cli("cli-run-yaml-list", "run -f list.yaml (a list)", 1, r"parameters file", r"\[256, 128\]", output="path",
    argv=lambda c, o: ["run", "extract_patches", "-f", str(c.yaml_list) if c else "list.yaml", "--output-dir", str(o) if o else "out"])
cli("cli-run-bogus-option", "run extract_patches --bogus", 2, r"--bogus", r"unrecognized arguments", r"usage",
    argv=lambda c, o: ["run", "extract_patches", "--bogus"], sub=True)
cli("cli-run-parameter-no-value", "run extract_patches -p sizes", 2, r"-p", r"expected 2 arguments", r"usage",
    argv=lambda c, o: ["run", "extract_patches", "-p", "sizes"])
cli("cli-templates-bogus", "templates --bogus", 2, r"--bogus", r"unrecognized arguments", r"usage",
    argv=lambda c, o: ["templates", "--bogus"])
cli("cli-run-sizes-zero", "run extract_patches -p sizes 0", 1, r"sizes", r"=0\b", output="path",
    argv=lambda c, o: ["run", "extract_patches", "-p", "sizes", "0", "--kernel", "python3", "--output-dir", str(o) if o else "out"])
cli("cli-run-memory-text", "run extract_patches -p max_memory lots", 1, r"max_memory", r"'lots'", output="path",
    argv=lambda c, o: ["run", "extract_patches", "-p", "max_memory", "lots", "--kernel", "python3",
                       "--output-dir", str(o) if o else "out"])
cli("cli-run-output-under-file", "run extract_patches --output-dir under a regular file", 1, r"output.dir|a-file\.txt",
    r"a-file\.txt", r"choose", output="path", at=lambda c, o: c.file / "out",
    argv=lambda c, o: ["run", "extract_patches", "--kernel", "python3", "--output-dir", str(c.file / "out") if c else "out"])

# ---- predict's model (patchkit.load_model), the predict command and template -----------------------------------------


def load_model(ref):
    from patchkit.stitch.loading import load_model as load

    return load(ref)


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


LOAD = "load_model"
case("load-empty", LOAD, "ref=''", PatchkitValueError, r"ref=''", r"empty", call=lambda c, o: load_model(""))
case("load-missing", LOAD, "a .keras path that does not exist", PatchkitValueError, r"ref=", r"missing\.keras'",
     r"check the path", call=lambda c, o: load_model(c.tmp / "missing.keras"))
case("load-suffix", LOAD, "a text file (notes.txt)", PatchkitValueError, r"ref=", r"notes\.txt' has the suffix '\.txt'",
     call=lambda c, o: load_model(c.text_file))
case("load-not-zip", LOAD, "a .keras file that is not a zip archive", PatchkitValueError, r"fake\.keras'",
     r"not a \.keras file", r"check that it was written by model\.save\(\)",
     call=lambda c, o: load_model(_written(c.tmp / "fake.keras", b"not a zip archive")))
case("load-not-hdf5", LOAD, "a .h5 file that is not HDF5", PatchkitValueError, r"fake\.h5'", r"not a HDF5 file",
     call=lambda c, o: load_model(_written(c.tmp / "fake.h5", b"\x00" * 64)))
case("load-folder", LOAD, "a folder that is not a SavedModel", PatchkitValueError, r"foreign'",
     r"without saved_model\.pb", r"model\.export", call=lambda c, o: load_model(c.foreign))
case("load-module", LOAD, "ref='pk_no_such_module:predict'", PatchkitValueError, r"ref='pk_no_such_module:predict'",
     r"no module named 'pk_no_such_module'", call=lambda c, o: load_model("pk_no_such_module:predict"))
case("load-attribute", LOAD, "ref='patchkit.sample:nope'", PatchkitValueError, r"ref='patchkit\.sample:nope'",
     r"no attribute 'nope'", r"check the name", call=lambda c, o: load_model("patchkit.sample:nope"))
case("load-not-callable", LOAD, "ref='patchkit.sample:BANDS' (a tuple)", PatchkitTypeError, r"ref='patchkit\.sample:BANDS'",
     r"not a callable", r"name a function", call=lambda c, o: load_model("patchkit.sample:BANDS"))
case("load-colon-path", LOAD, "ref='models/v2:best.keras' (neither a file nor module:function)", PatchkitValueError,
     r"ref='models/v2:best\.keras'", r"no such file or folder", r"dotted Python names",
     call=lambda c, o: load_model("models/v2:best.keras"))
case("load-type", LOAD, "ref=3", PatchkitTypeError, r"ref=3", r"neither a path nor a callable",
     call=lambda c, o: load_model(3))


def predict_argv(c, o, *extra, model="numpy:positive", scene=None):
    """``patchkit predict`` of the small GeoTIFF with an identity model (numpy's), writing ``o``.tif."""
    return ["predict", str(scene or c.tif), str(model), *SPEC_ARGS, "--out", str(o.with_suffix(".tif")), *extra]


TIF_OUT = dict(output="path", at=lambda c, o: o.with_suffix(".tif"))
cli("cli-predict-no-sizes", "predict scene.tif model.keras (no --sizes)", 2, r"--sizes", r"required", r"usage",
    argv=lambda c, o: ["predict", "scene.tif", "model.keras", "--strides", "4"])
cli("cli-predict-no-model", "predict scene.tif (no MODEL)", 2, r"model", r"required", r"usage",
    argv=lambda c, o: ["predict", "scene.tif", *SPEC_ARGS])
cli("cli-predict-missing-model", "predict with a model path that does not exist", 1, r"missing\.keras'",
    r"no such file or folder", r"check the path", sub=True, **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, model=c.tmp / "missing.keras"))
cli("cli-predict-model-module", "predict scene.tif pk_no_such_module:predict", 1, r"pk_no_such_module",
    r"no module named", **TIF_OUT, argv=lambda c, o: predict_argv(c, o, model="pk_no_such_module:predict"))
cli("cli-predict-model-not-callable", "predict scene.tif patchkit.sample:BANDS", 1, r"patchkit\.sample:BANDS",
    r"not a callable", r"name a function", **TIF_OUT, argv=lambda c, o: predict_argv(c, o, model="patchkit.sample:BANDS"))
cli("cli-predict-missing-scene", "predict missing.tif", 1, r"missing\.tif", r"No such file|does not exist",
    r"check the path", **TIF_OUT, argv=lambda c, o: predict_argv(c, o, scene=c.tmp / "missing.tif"))
cli("cli-predict-out-suffix", "predict --out pred.png", 1, r"out=", r"pred\.png", r"pass e\.g\.",
    argv=lambda c, o: [*predict_argv(c, o)[:-2], "--out", str(c.tmp / "pred.png")], output="path",
    at=lambda c, o: c.tmp / "pred.png")
cli("cli-predict-blend-unknown", "predict --blend median", 1, r"blend", r"'median'", **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, "--blend", "median"))
cli("cli-predict-blend-parameter", "predict --blend tukey,wide", 2, r"--blend", r"'tukey,wide'", r"such as tukey,0\.5",
    argv=lambda c, o: predict_argv(c, o, "--blend", "tukey,wide"))
cli("cli-predict-crop", "predict --sizes 4 --crop 2", 1, r"crop=2", r"patches of 4 rows", r"at most 1", **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, "--crop", "2"))
cli("cli-predict-batch-zero", "predict --batch-size 0", 1, r"batch_size", r"=0\b", r"--batch-size 16", **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, "--batch-size", "0"))
cli("cli-predict-batch-text", "predict --batch-size lots", 2, r"--batch-size", r"'lots'", r"usage",
    argv=lambda c, o: predict_argv(c, o, "--batch-size", "lots"))
cli("cli-predict-memory", "predict --max-memory lots", 1, r"max_memory", r"'lots'", **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, "--max-memory", "lots"))
cli("cli-predict-backend", "predict --backend torch", 2, r"--backend", r"'torch'", r"choose from",
    argv=lambda c, o: predict_argv(c, o, "--backend", "torch"))
cli("cli-predict-model-raises", "predict with a model that raises (numpy.linalg:inv)", 1, r"model raised",
    r"LinAlgError", r"fix the model", **TIF_OUT, argv=lambda c, o: predict_argv(c, o, model="numpy.linalg:inv"))
cli("cli-predict-model-shape", "predict with a model of the wrong shape (numpy:transpose)", 1, r"model returned shape",
    r"one prediction per patch", r"keep the batch axis", **TIF_OUT,
    argv=lambda c, o: predict_argv(c, o, model="numpy:transpose"))
case("jobs-predict-blend", "jobs.run_template", "predict_scene {'blend': 'median'}", PatchkitValueError, r"blend",
     r"'median'", output="path", call=lambda c, o: jobs().run_template("predict_scene", {"blend": "median"}, o))
case("jobs-predict-crop", "jobs.run_template", "predict_scene {'sizes': 16, 'crop': 8}", PatchkitValueError,
     r"crop=8", r"patches of 16 rows", r"at most 7", output="path",
     call=lambda c, o: jobs().run_template("predict_scene", {"sizes": 16, "crop": 8}, o))
case("jobs-predict-batch", "jobs.run_template", "predict_scene {'batch_size': 0}", PatchkitValueError, r"batch_size",
     r"=0\b", r"-p batch_size 16", output="path",
     call=lambda c, o: jobs().run_template("predict_scene", {"batch_size": 0}, o))


# --------------------------------------------------------------------------------------------------
# What the cases work on: small files and objects, made once
# --------------------------------------------------------------------------------------------------


class KernelStarted(RuntimeError):
    """Raised where a template's kernel would start: the bad parameters were not refused before it."""


@dataclass
class Ctx:
    tmp: Path
    img: Any = None
    da: Any = None
    lazy: Any = None
    rotated: Any = None
    patches: Any = None
    tif: Path | None = None
    truncated: Path | None = None
    url_missing: str | None = None
    url_broken: str | None = None
    text_file: Path | None = None
    file: Path | None = None
    readonly: Path | None = None
    foreign: Path | None = None
    folder_tif: Path | None = None
    file_zarr: Path | None = None
    deep: Path | None = None
    zarr_done: Path | None = None
    zarr_partial: Path | None = None
    zarr_plain: Path | None = None
    chips_partial: Path | None = None
    tfr_partial: Path | None = None
    tfr_foreign: Path | None = None
    yaml_bad: Path | None = None
    yaml_list: Path | None = None
    yaml_binary: Path | None = None
    tf: Any = None
    explorer: Any = None
    available: set = field(default_factory=set)

    @property
    def foreign_targets(self) -> tuple[Path, ...]:
        """Outputs of other programs that cases aim at (they exist before any case runs)."""
        return tuple(p for p in (self.foreign, self.file, self.tfr_foreign) if p is not None)

    def __repr__(self) -> str:  # short, for assertion messages
        return f"Ctx({str(self.tmp)!r})"


def _read_only_folder(tmp: Path) -> Path | None:
    """A folder that takes no new file: a chmod-ed one, or (as root, whom modes do not stop) /sys."""
    for folder in (tmp / "read-only", Path("/sys")):
        if folder != Path("/sys"):
            folder.mkdir()
            folder.chmod(0o555)
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return folder
    return None


def _serve(c: Ctx, tmp: Path) -> None:
    """A loopback HTTP server (it stops with this process) serving ``broken.tif``, a tiled GeoTIFF whose tile reads
    it answers with 500, and no ``missing.tif``."""
    import rasterio
    from rasterio.transform import from_origin

    from .helpers import write_geotiff
    from .http_server import LoopbackServer

    (tmp / "served").mkdir()
    broken = write_geotiff(tmp / "served" / "broken.tif", np.arange(3 * 256 * 256, dtype=np.uint16).reshape(3, 256, 256),
                           from_origin(500000.0, 4200000.0, 30.0, 30.0))
    with rasterio.open(broken) as src:
        first_block = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    server = LoopbackServer(tmp / "served").start()
    server.fault("broken.tif", "status", code=500, after=first_block)
    c.url_missing, c.url_broken = server.url("missing.tif"), server.url("broken.tif")


def quick_http(call: Callable[[], Any]) -> Any:
    """``call()`` with GDAL retrying an HTTP error once, 50 ms later (patchkit's defaults take seconds)."""
    saved = {k: os.environ.get(k) for k in ("GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY")}
    os.environ.update(GDAL_HTTP_MAX_RETRY="1", GDAL_HTTP_RETRY_DELAY="0.05")
    try:
        return call()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def make_ctx(tmp: Path) -> Ctx:
    """Everything the cases use, under ``tmp``: rasters, stores of every sink (finished and not), files."""
    import rioxarray
    import zarr
    from affine import Affine
    from rasterio.transform import from_origin

    from .helpers import write_geotiff

    c = Ctx(tmp)
    c.img = np.zeros((1, 8, 8, 2), np.float32)
    rng = np.random.default_rng(5)
    c.tif = write_geotiff(tmp / "scene.tif", rng.normal(size=(2, 12, 10)).astype(np.float32),
                          from_origin(500000.0, 4200000.0, 30.0, 30.0), nodata=-9999.0)
    c.da = rioxarray.open_rasterio(c.tif).load()
    c.lazy = rioxarray.open_rasterio(c.tif, chunks={"y": 6, "x": 10})
    c.rotated = c.da.rio.write_transform(Affine.rotation(30) * Affine(30.0, 0, 500000.0, 0, -30.0, 4200000.0))
    c.patches = c.da.patches.extract(4, 4)
    big = write_geotiff(tmp / "big.tif", np.arange(3 * 40 * 40, dtype=np.uint16).reshape(3, 40, 40),
                        from_origin(500000.0, 4200000.0, 30.0, 30.0))
    data = big.read_bytes()
    c.truncated = tmp / "truncated.tif"
    c.truncated.write_bytes(data[: len(data) // 2])
    _serve(c, tmp)
    c.text_file = tmp / "notes.txt"
    c.text_file.write_text("not a raster\n")
    c.file = tmp / "a-file.txt"
    c.file.write_text("a regular file\n")
    c.readonly = _read_only_folder(tmp)
    if c.readonly is not None:
        c.available.add("readonly")
    c.foreign = tmp / "foreign"
    c.foreign.mkdir()
    (c.foreign / "holiday.jpg").write_bytes(b"\xff\xd8 not patchkit's")
    c.folder_tif = tmp / "x.tif"
    c.folder_tif.mkdir()
    c.deep = tmp / "a-folder-with-a-long-name" / "and-another-one-below-it" / "and-a-third-one-further-down"
    c.file_zarr = tmp / "x.zarr"
    c.file_zarr.write_text("a file named like a store\n")
    c.zarr_done = c.da.patches.to_zarr(tmp / "done.zarr", 4, 4, progress=False)
    c.zarr_partial = c.da.patches.to_zarr(tmp / "partial.zarr", 4, 4, progress=False)
    zarr.open_group(str(c.zarr_partial), mode="r+").attrs["patchkit_complete"] = False
    c.zarr_plain = tmp / "plain.zarr"
    c.da.to_dataset(name="v").to_zarr(c.zarr_plain, zarr_format=3)
    c.chips_partial = c.da.patches.to_geotiffs(tmp / "partial-chips", 4, 4, progress=False)
    manifest = json.loads((c.chips_partial / "patchkit.json").read_text())
    (c.chips_partial / "patchkit.json").write_text(json.dumps({**manifest, "complete": False}))
    c.yaml_bad = tmp / "bad.yaml"
    c.yaml_bad.write_text("sizes: 256\nstrides: [128, 128\npadding: SAME\n")
    c.yaml_list = tmp / "list.yaml"
    c.yaml_list.write_text("- 256\n- 128\n")
    c.yaml_binary = tmp / "binary.yaml"
    c.yaml_binary.write_bytes(b"\xff\xfe\x00\x81binary")
    c.tfr_foreign = tmp / "tfr" / "other"
    c.tfr_foreign.parent.mkdir()
    c.tfr_foreign.with_suffix(".json").write_text('{"shards": "someone else\'s"}')
    try:
        from patchkit.core.backends.cupy import import_cupy

        import_cupy()
    except BackendUnavailableError:
        c.available.add("no-cupy")  # the case of a GPU backend on a machine without one
    try:
        import tensorflow as tf
    except ImportError:
        pass
    else:
        c.tf = tf
        c.available.add("tf")
        manifest = patchkit.to_tfrecord(c.da, tmp / "tfr" / "partial", 4, 4, progress=False)
        c.tfr_partial = manifest.with_suffix("")
        record = json.loads(manifest.read_text())
        record["shards"][-1].update(done=False, count=None, bytes=None)  # as a run killed before its last shard
        manifest.write_text(json.dumps({**record, "complete": False}))
        importlib.import_module("patchkit.keras")  # imported before the cases are timed
    try:
        import ipywidgets  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        from patchkit.explorer import PatchExplorer

        c.explorer = PatchExplorer(c.da, 4, 4, asynchronous=False)
        c.available.add("widgets")
    import dask.array  # noqa: F401
    import geopandas  # noqa: F401
    import papermill  # noqa: F401
    import scipy.signal  # noqa: F401  (stitch's window names; importing it takes seconds on a cold disk)

    for module in ("patchkit.jobs.cli", "patchkit.testing", "patchkit.explorer"):
        importlib.import_module(module)
    importlib.import_module("patchkit.jobs.templates").parameters("extract_patches")  # papermill's first look loads its schemas
    return c


@contextlib.contextmanager
def no_kernels():
    """Within the block a template's kernel never starts: starting one raises :class:`KernelStarted`."""
    import papermill

    import patchkit.jobs.templates

    def refuse(*args, **kwargs):
        raise KernelStarted("a kernel would start here: the parameters were not refused before it")

    saved = papermill.execute_notebook, patchkit.jobs.templates.ensure_kernel
    papermill.execute_notebook = patchkit.jobs.templates.ensure_kernel = refuse
    try:
        yield
    finally:
        papermill.execute_notebook, patchkit.jobs.templates.ensure_kernel = saved


# --------------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a case gave: the exception (or the exit status and stderr), the message, time and memory."""

    error: BaseException | None = None
    status: int | None = None
    stderr: str = ""
    message: str = ""
    seconds: float = 0.0
    peak: int = 0


def out_path(c: Ctx, k: Case, root: str) -> Path:
    """A fresh, empty folder for the case and the output path inside it (which does not exist yet)."""
    folder = c.tmp / root / k.id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    name = {"zarr": "p.zarr", "geotiff": "chips", "tfrecord": "p", "path": "out"}.get(k.output, "out")
    return folder / name


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``patchkit.jobs.cli.main(argv)`` in this process: its exit status (argparse's too) and stderr."""
    from patchkit.jobs.cli import main

    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
    return status, stderr.getvalue()


def run_case(c: Ctx, k: Case, root: str = "cases", measure: bool = True) -> tuple[Outcome, Path]:
    """Call the case once (under tracemalloc when ``measure``); what it raised or printed, and its output path."""
    out = out_path(c, k, root)
    result = Outcome()
    if measure:
        tracemalloc.start()
        tracemalloc.reset_peak()
    start = time.perf_counter()
    try:
        with no_kernels():
            if k.argv is not None:
                result.status, result.stderr = run_cli(k.argv(c, out))
            else:
                k.call(c, out)
    except Exception as err:  # what the case raised, whatever it is, is the outcome
        result.error = err
    finally:
        result.seconds = time.perf_counter() - start
        if measure:
            result.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    if result.error is not None:
        result.message = str(result.error)
    elif k.argv is not None:
        result.message = cli_message(result.status, result.stderr)
    return result, out


def cli_message(status: int | None, stderr: str) -> str:
    """What the command says: its error line, after the usage lines for a usage error (exit status 2)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return " ".join(lines) if status == 2 else (lines[-1] if lines else "")


def check_output(c: Ctx, k: Case, out: Path) -> None:
    """Requirement 4: nothing at the case's output, or an output its reader refuses as incomplete.

    A target that was there before the case (another program's folder or manifest) may instead be
    refused as foreign (:class:`ForeignStoreError`): either way it does not read as finished patches.
    """
    if k.output is None:
        return
    path = k.at(c, out) if k.at is not None else out
    if k.output == "tfrecord":
        exists = path.with_suffix(".json").exists() if path.suffix != ".json" else path.exists()
    else:
        exists = path.exists()
    if not exists:
        return
    if k.output == "path":
        raise AssertionError(f"{path} was left behind")
    reader = {
        "zarr": lambda: patchkit.open_patches(path),
        "geotiff": lambda: __import__("patchkit.sinks.geotiff").sinks.geotiff.read_index(path),
        "tfrecord": lambda: patchkit.read_tfrecord(path),
    }[k.output]
    with pytest.raises((IncompleteStoreError, ForeignStoreError) if path in c.foreign_targets else IncompleteStoreError):
        reader()


def check_case(c: Ctx, k: Case, result: Outcome, out: Path) -> None:
    """Requirements 1 to 4 for one case."""
    if k.argv is not None:
        assert result.error is None, f"patchkit {' '.join(k.argv(c, out))} raised {result.error!r}"
        assert result.status == k.error, f"exit status {result.status}, not {k.error}: {result.stderr!r}"
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if k.error == 1:
            assert len(lines) == 1, f"not one line on stderr: {result.stderr!r}"
        else:
            assert lines and lines[0].startswith("usage:") and ": error: " in lines[-1], result.stderr
    else:
        assert result.error is not None, "no error was raised"
        if not isinstance(result.error, k.error):
            raise AssertionError(f"{type(result.error).__name__}, not {k.error.__name__}: {result.message}") from result.error
        assert isinstance(result.error, PatchkitError)
    for pattern in k.match:
        assert re.search(pattern, normalise(c, result.message)), f"{pattern!r} not in {result.message!r}"
    assert result.seconds < MAX_SECONDS, f"took {result.seconds:.2f} s"
    assert result.peak < MAX_PEAK, f"tracemalloc peak {result.peak / 2**20:.1f} MiB"
    check_output(c, k, out)


def normalise(c: Ctx, message: str) -> str:
    """A message with this run's folders, free memory and addresses replaced by placeholders."""
    text = " ".join(message.split())
    if c.readonly is not None:
        text = text.replace(str(c.readonly), "<read-only>")
    text = text.replace(str(c.tmp), "<tmp>")
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)  # the loopback server's
    # a long path errors.shown cut in the middle: where the cut falls depends on the length of <tmp>
    text = re.sub(r"'(?:/|<tmp>)[^'\s]*?\.\.\.", "'<tmp>/...", text)
    text = re.sub(r"only [\d.]+ [KMGTPE]?i?B is (available|free)", r"only <free> is \1", text)
    text = re.sub(r"\b0x[0-9a-f]+\b", "0x…", text)
    return re.sub(r"[0-9a-f]{32}", "<uuid>", text)


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------

MEASURED: dict[str, Outcome] = {}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, request):
    for package in ("rioxarray", "rasterio", "zarr", "geopandas", "dask", "papermill", "yaml", "scipy"):
        pytest.importorskip(package)  # the dev extras; TensorFlow and ipywidgets only skip the cases that need them
    c = make_ctx(tmp_path_factory.mktemp("catalogue"))
    yield c
    if c.readonly is not None and c.readonly != Path("/sys"):
        c.readonly.chmod(0o755)
    if MEASURED:
        slowest = max(MEASURED.items(), key=lambda kv: kv[1].seconds)
        largest = max(MEASURED.items(), key=lambda kv: kv[1].peak)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(
                    f"\ncatalogue: {len(MEASURED)} cases passed in this process; slowest {slowest[0]} {slowest[1].seconds * 1000:.0f} ms; "
                    f"largest tracemalloc peak {largest[0]} {largest[1].peak / 2**20:.2f} MiB")


def _skip_unavailable(c: Ctx, k: Case) -> None:
    missing = [need for need in k.needs if need not in c.available]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def _param(k: Case):
    marks = [pytest.mark.xfail(strict=True, reason=k.xfail)] if k.xfail else []
    return pytest.param(k, id=k.id, marks=marks)


@pytest.mark.parametrize("k", [_param(k) for k in CASES])
def test_bad_input(ctx, k, record_property):
    """Each bad input is refused with a patchkit error naming argument, value and fix, at once, with no output."""
    _skip_unavailable(ctx, k)
    result, out = run_case(ctx, k)
    if not k.xfail:  # the known gaps fail by design; the summary is of the cases that pass
        MEASURED[k.id] = result
    record_property("seconds", round(result.seconds, 4))
    record_property("tracemalloc_peak", result.peak)
    check_case(ctx, k, result, out)


@pytest.mark.parametrize("k", [_param(k) for k in CASES if k.sub])
def test_bad_input_in_a_subprocess(ctx, k, record_property):
    """The command as users run it: the same exit status and message line, and no traceback."""
    _skip_unavailable(ctx, k)
    out = out_path(ctx, k, "subprocess")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "patchkit.jobs.cli", *k.argv(ctx, out)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 3))
    result = Outcome(status=done.returncode, stderr=done.stderr, seconds=0.0)
    result.message = cli_message(done.returncode, done.stderr)
    check_case(ctx, k, result, out)
    assert seconds < MAX_SUBPROCESS_SECONDS


def test_catalogue_size():
    """At least 130 cases, every one with a unique id, and every entry point family represented."""
    ids = [k.id for k in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 130
    families = {k.id.split("-")[0] for k in CASES}
    assert {"spec", "extract", "iter", "acc", "zarr", "gtiff", "tfr", "stitch", "cli", "jobs", "model"} <= families


# --------------------------------------------------------------------------------------------------
# docs/bad_inputs.md, made from the table
# --------------------------------------------------------------------------------------------------


def _shorten(text: str, limit: int = 260) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 100].rstrip() + " … " + text[-95:].lstrip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _error_cell(k: Case, result: Outcome) -> str:
    if k.argv is not None:
        kind = {0: "accepted", 2: "usage error"}.get(result.status, "error")
        shown = "exception escaped" if result.error is not None else f"exit {result.status} ({kind})"
    elif result.error is None:
        shown = "nothing raised"
    else:
        shown = f"`{type(result.error).__name__}`"
    return shown + (" ⚠ known gap" if k.xfail else "")


def _same_everywhere(text: str) -> str:
    """A message as every machine gives it: a read-only folder refuses root with EPERM and others with EACCES."""
    return text.replace("Operation not permitted", "Permission denied") if "<read-only>" in text else text


def render(c: Ctx) -> str:
    """The Markdown page: one row per case, with the message each gives now."""
    lines = [
        "# Bad inputs and what patchkit says",
        "",
        "Every public entry point refuses hostile or mistaken input with a `patchkit.errors` exception (the",
        "command: a non-zero exit status and one line on stderr) that names the argument, the value and the fix,",
        "within a second, before anything large is allocated, and without leaving an output that reads as",
        "complete. This table is generated from the catalogue in `tests/test_catalogue.py`, which checks all of",
        "that for every row; regenerate it with",
        "",
        "```bash",
        ".venv/bin/python -m tests.test_catalogue > docs/bad_inputs.md",
        "```",
        "",
        "Rows marked ⚠ are known gaps (the test marks them `xfail` with the fix to make).",
        "`<tmp>` stands for the test's temporary folder, `<read-only>` for a folder that takes no new files,",
        "`<port>` for the port of the test's HTTP server on the loopback.",
        "",
        "| entry point | input | error | what the message says |",
        "| --- | --- | --- | --- |",
    ]
    for k in CASES:
        if any(need not in c.available for need in k.needs):
            message, error = f"(not run here: needs {', '.join(k.needs)})", "—"
        else:
            result, _ = run_case(c, k, root="docs", measure=False)
            said = result.message if k.argv is None or result.status != 2 else cli_message(1, result.stderr)  # the error line
            message, error = _shorten(_same_everywhere(normalise(c, said))), _error_cell(k, result)
        lines.append(f"| `{_cell(k.entry)}` | {_cell(k.input)} | {error} | {_cell(message)} |")
    return "\n".join(lines) + "\n"


def test_docs_are_current(ctx):
    """docs/bad_inputs.md is the table this catalogue makes now (regenerate it as the module docstring says)."""
    missing = {need for k in CASES for need in k.needs} - ctx.available
    if missing:
        pytest.skip(f"the page shows cases that need {', '.join(sorted(missing))}")
    import difflib

    now, written = render(ctx), DOC.read_text()
    changes = [line for line in difflib.unified_diff(written.splitlines(), now.splitlines(), "docs/bad_inputs.md", "now", n=0, lineterm="")]
    assert not changes, ("docs/bad_inputs.md is out of date: run `.venv/bin/python -m tests.test_catalogue > "
                         "docs/bad_inputs.md`\n" + "\n".join(changes[:12]))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        context = make_ctx(Path(folder))
        try:
            sys.stdout.write(render(context))
        finally:
            if context.readonly is not None and context.readonly != Path("/sys"):
                context.readonly.chmod(0o755)
