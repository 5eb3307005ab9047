"""One progress bar per sink job: patches written, GB written and GB/s, locally or on a cluster."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core.units import format_bytes

__all__ = ["JobBar", "band_patches"]


def band_patches(prepared: Any, rows: slice, done: np.ndarray | None = None) -> int:
    """Patches of output rows ``rows`` of ``prepared`` (the kept ones when filtering), leaving out ``done`` rows."""
    fresh = np.ones(rows.stop - rows.start, bool) if done is None else ~done[rows]
    if prepared.keep is None:
        return int(fresh.sum()) * prepared.grid_shape[1]
    return int(prepared.keep[rows][fresh].sum())


class JobBar:
    """A tqdm bar counting patches, with the bytes written this run and their rate as its postfix.

    Parameters
    ----------
    prepared : Prepared
        The job (its grid, kept patches and arrays give the totals).
    desc : str
        The bar's label (``"patches -> out.zarr"``).
    done : ndarray of bool, optional
        Rows finished by an earlier run: counted from the start, not in the rate.
    enabled : bool
        False hides the bar (``progress=False``); None, tqdm's rule, hides it off a terminal.
    """

    def __init__(self, prepared: Any, desc: str, done: np.ndarray | None = None, enabled: bool | None = True):
        from tqdm.auto import tqdm

        rows = slice(0, prepared.grid_shape[0])
        self._prepared = prepared
        self._patch_bytes = sum(prepared.spec.patch_nbytes(job.images.shape, job.images.dtype) for job in prepared.jobs.values())
        total = band_patches(prepared, rows)
        initial = total - band_patches(prepared, rows, done) if done is not None else 0
        self._bar = tqdm(total=total, initial=initial, unit="patch", desc=desc, disable=None if enabled else True)
        self._start, self._written = time.perf_counter(), 0

    def band(self, rows: slice, done: np.ndarray | None = None) -> None:
        """Count the patches of a band just written (``done``: rows of it an earlier run had finished)."""
        self.add(band_patches(self._prepared, rows, done))

    def add(self, patches: int) -> None:
        """Count ``patches`` just written."""
        self._written += patches * self._patch_bytes
        seconds = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix_str(f"{format_bytes(self._written)}, {self._written / seconds / 1e9:.2f} GB/s", refresh=False)
        self._bar.update(patches)

    def close(self) -> None:
        """Fill the bar (bands without a kept patch are never written) and close it."""
        self._bar.update(self._bar.total - self._bar.n)
        self._bar.close()

    def __enter__(self) -> "JobBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._bar.close()
