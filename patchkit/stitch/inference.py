"""Rows of predicted patches: the source's patches extracted a few patch rows at a time, run through the model in
batches, and held as stitch reads them (:class:`Predictions`, a :class:`~patchkit.stitch.readers.Reader` to
:func:`patchkit.stitch.bands.run`).

Consecutive bands of output rows share a few patch rows (a patch reaches both). Those stay in the buffer, moved to
its front, so the model sees every patch once. The buffer is ``[N, rows, cols, kh, kw, M]``: a model that returns
only a patch's centre fills the centre, and the crop keeps stitch from reading the rest. Patch rows are extracted
``group`` rows at a time (enough for one batch) into a reused block: what is held besides the buffer is one
group's block and input rows, and one batch of the model's input and output (:meth:`Predictions.fixed_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.budget import band_peak
from ..core.sources import Source
from ..core.spec import PatchSpec
from .model import Finite, Output, call, checked, to_host
from .readers import Band

__all__ = ["Predictions", "Runner", "batch_bytes"]


def batch_bytes(spec: PatchSpec, channels: int, dtype: np.dtype, output: Output, batch_size: int) -> int:
    """Bytes of one batch in flight: the patches as the model's framework holds them (at least 4 bytes a value:
    a float tensor) and its predictions twice (the framework's and the host's copy)."""
    kh, kw = spec.sizes
    inputs = kh * kw * channels * max(4, np.dtype(dtype).itemsize)
    return batch_size * (inputs + 2 * output.patch_bytes)


@dataclass
class Runner:
    """Extracts patch rows of ``source`` and runs them through ``model`` in batches of ``batch_size``.

    ``group`` patch rows are extracted at a time (per image), into a reused block; ``bar`` (tqdm, or None)
    counts patches; ``finite`` counts non-finite predictions.
    """

    source: Source
    spec: PatchSpec
    backend: Any
    model: Callable
    output: Output
    crop: tuple[int, int]
    batch_size: int
    group: int
    finite: Finite
    bar: Any = None
    cache: int = 0  # GDAL's block cache while a dask source is read, bounded to this (patchkit.core.gdal)
    convert: Callable[[Any], Any] = to_host  # where predictions go: the host, or the device (patchkit.stitch.device)
    staging: Any = None  # input rows to the device ahead of their use (patchkit.stitch.device.Staging)
    _block: np.ndarray | None = field(default=None, repr=False)
    _halo: np.ndarray | None = field(default=None, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        return self.spec.grid_shape(self.source.shape)

    def skip(self, rows: int) -> None:
        """Count ``rows`` patch rows finished by an earlier run on the progress bar."""
        if self.bar is not None:
            self.bar.update(rows * self.grid[1] * self.source.shape[0])

    def resize(self, batch_size: int) -> None:
        """Batches of ``batch_size`` patches, from groups of enough patch rows for one (before the first batch)."""
        self.batch_size, self.group = batch_size, -(-batch_size // self.grid[1])

    def fixed_bytes(self) -> int:
        """What a group holds besides the predictions: its block of patches, the input rows it reads and the
        temporaries of reading them (a lazy source; :func:`patchkit.core.budget.band_peak`), GDAL's block cache
        while a dask source is read (:attr:`cache`), and one batch in flight (:func:`batch_bytes`)."""
        shape, dtype = self.source.shape, self.source.dtype
        group = band_peak(self.spec, shape, dtype, self.group, lazy=self.source.lazy, chunks=self.source.chunks,
                          pad_copy=self.backend.pad_copy)
        return group + self.cache + batch_bytes(self.spec, shape[3], dtype, self.output, self.batch_size)

    def predict(self, a: int, b: int, dest: np.ndarray) -> None:
        """Predict patch rows ``[a, b)`` into ``dest``: ``[N, b - a, cols, kh, kw, M]`` (dense) or ``[N, b - a, cols, M]``.

        With a :attr:`staging` (the device path), the next group's input rows travel to the device while the model
        runs on this group's patches (they are read once this group's patches are extracted from the rows before).
        """
        groups = [slice(r0, min(r0 + self.group, b)) for r0 in range(a, b, self.group)]
        ahead = self._send(groups[0]) if groups else None
        for k, rows in enumerate(groups):
            block = self._extract(*self._receive(ahead), rows)
            if k + 1 < len(groups):  # after the extraction: the next rows may go into the same buffer
                ahead = self._send(groups[k + 1])
            for i in range(block.shape[0]):
                image = f" of image {i}" if block.shape[0] > 1 else ""
                span = f"rows {rows.start}-{rows.stop - 1}" if len(range(rows.start, rows.stop)) > 1 else f"row {rows.start}"
                where = f"patch {span}{image}"
                self._run(block[i], dest[i, rows.start - a: rows.stop - a], where)

    def _send(self, rows: slice) -> tuple:
        """The input rows of ``rows`` (the halo of a lazy source, read into the reused buffer; the whole of an array
        in memory) and the first row they hold, on their way to the device when there is a :attr:`staging`."""
        shape, spec = self.source.shape, self.spec
        b, _, w, c = shape
        ya, yb = spec.input_rows(rows, shape, clip=True)
        if self.source.lazy:
            if self._halo is None:
                lo, hi = spec.input_rows((0, self.group), shape)
                self._halo = np.empty(b * (hi - lo) * w * c, self.source.dtype)
            halo = self._halo[: b * (yb - ya) * w * c].reshape(b, yb - ya, w, c)
            src, row0 = self.source.read_rows(ya, yb, out=halo), ya
        else:
            src, row0 = self.source.numpy(), 0
        if self.staging is None:
            return src, row0, None
        return self.staging.send(src[:, ya - row0: yb - row0]) + (ya,)

    def _receive(self, sent: tuple) -> tuple:
        """``(rows, first row)`` of a :meth:`_send`, once on the device."""
        if self.staging is not None:
            src, event, row0 = sent
            self.staging.wait(event)
            return src, row0
        return sent[0], sent[1]

    def _extract(self, src: Any, row0: int, rows: slice) -> Any:
        """The patches of ``rows``, ``[N, rows, cols, kh * kw * C]`` (a view of the reused block with the numpy backend)."""
        shape, spec = self.source.shape, self.spec
        b, n, (_, ow) = shape[0], rows.stop - rows.start, self.grid
        depth = spec.sizes[0] * spec.sizes[1] * shape[3]
        out = None
        if self.backend.name == "numpy":
            if self._block is None:
                self._block = np.empty(b * self.group * ow * depth, self.source.dtype)
            out = self._block[: b * n * ow * depth].reshape(b, n, ow, depth)
        return self.backend.band(src, row0, shape, spec, rows, out)

    def _run(self, block: Any, dest: np.ndarray, where: str) -> None:
        """Run the patches of one image's block ``[rows, cols, depth]`` through the model, into ``dest``."""
        kh, kw = self.spec.sizes
        patches = block.reshape(-1, kh, kw, block.shape[-1] // (kh * kw))
        out = dest.reshape((patches.shape[0],) + dest.shape[2:])  # a view: callers pass rows of contiguous buffers
        if self.output.kind == "dense" and self.output.shape != (kh, kw):
            (c0, c1) = self.crop
            out = out[:, c0: kh - c0, c1: kw - c1]
        for s in range(0, patches.shape[0], self.batch_size):
            e = min(s + self.batch_size, patches.shape[0])
            at = f"the batch of patches {s}-{e - 1} of {where}"
            got = checked(call(self.model, patches[s:e], at, self.convert), self.output, e - s, at)
            self.finite.check(got, at)
            np.copyto(out[s:e], got, casting="unsafe")
            if self.bar is not None:
                self.bar.update(e - s)


@dataclass
class Predictions:
    """Rows of predicted patches, read the way stitch reads rows of patches (the :class:`Reader` interface).

    :meth:`read` predicts the rows a band needs that the buffer does not hold, after moving the rows it still
    needs to the buffer's front; ``capacity`` is the most rows a band needs (the plan's), set before the first read.
    """

    runner: Runner
    capacity: int = 0
    kind: str = "grid"
    lazy: bool = True
    chunks: Any = None
    _buffer: np.ndarray | None = field(default=None, repr=False)
    _held: range = range(0)

    def __post_init__(self) -> None:
        output = self.runner.output
        oh, ow = self.runner.grid
        self.n, self.m, self.ow = self.runner.source.shape[0], output.channels, ow
        self.sizes, self.dtype = tuple(self.runner.spec.sizes), output.dtype
        self.rows, self.cols = range(oh), range(ow)

    @property
    def patch_bytes(self) -> int:
        """Bytes of one grid position's predictions, as held (the whole patch, whatever the model returns)."""
        return self.n * self.m * self.sizes[0] * self.sizes[1] * self.dtype.itemsize

    def read_bytes(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """What a read of rows ``[p0, p1)`` holds: those rows of predictions and what making them holds."""
        count = np.maximum(np.minimum(p1, len(self.rows)) - np.maximum(p0, 0), 0)
        return count * self.ow * self.patch_bytes + self.runner.fixed_bytes()

    def read(self, p0: int, p1: int) -> Band | None:
        """Predicted patch rows ``[p0, p1)`` (bands move down the image: ``p0`` never goes back)."""
        p0, p1 = max(p0, 0), min(p1, len(self.rows))
        if p0 >= p1:
            return None
        buffer = self._rows(max(self.capacity, p1 - p0))
        held, start = range(max(p0, self._held.start), min(p1, self._held.stop)), p0
        if len(held) and held.start == p0:  # rows the last band read too: to the front, a row at a time (no temporary)
            for k, row in enumerate(held):
                buffer[:, k] = buffer[:, row - self._held.start]
            start = held.stop
        if start < p1:
            self.runner.predict(start, p1, buffer[:, start - p0: p1 - p0])
        self._held = range(p0, p1)
        return Band(buffer[:, : p1 - p0], range(p0, p1), self.cols, None)

    def _rows(self, rows: int) -> np.ndarray:
        """The buffer, ``[N, rows or more, cols, kh, kw, M]``, grown (keeping what it holds) when too small."""
        if self._buffer is None or self._buffer.shape[1] < rows:
            grown = np.empty((self.n, rows, self.ow, *self.sizes, self.m), self.dtype)
            if self._buffer is not None and len(self._held):
                grown[:, : len(self._held)] = self._buffer[:, : len(self._held)]
            self._buffer = grown
        return self._buffer
