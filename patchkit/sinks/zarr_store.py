"""A patchkit Zarr store's markers, and reading one back: :func:`open_patches` refuses a store that is not complete or whole.

The writer is :mod:`patchkit.sinks.zarr`; these are the attributes it keeps in the store's root
``zarr.json`` and the checks a reader makes: the completion marker, every stored chunk present and,
with ``verify="full"``, every logged band's pixels against their content digests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DamagedOutputError, IncompleteStoreError
from ._store import band_digest, check_path, check_verify

__all__ = ["open_patches", "FINGERPRINT", "ROWS_DONE", "BANDS", "SOURCE_FILES", "COMPLETE", "VERIFY"]

FINGERPRINT = "patchkit_fingerprint"
ROWS_DONE = "patchkit_rows_done"
#: ``[start, stop, digest]`` of every band written: the content digests of its patch rows.
BANDS = "patchkit_bands"
#: ``[path, size, mtime_ns]`` of the files the source was read from, when the store was created.
SOURCE_FILES = "patchkit_source_files"
COMPLETE = "patchkit_complete"
#: ``verify`` values of :func:`open_patches`.
VERIFY = ("cheap", "full", False)


def _open_group(path: Path):
    import zarr

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception:  # not a zarr group (or unreadable): the caller decides
        return None


def open_patches(store: str | Path, *, verify: str | bool = "cheap", mask_and_scale: bool = False, **kwargs):
    """Open a store written by :func:`patchkit.sinks.zarr.to_zarr` (lazily, with dask), refusing one that is not complete or whole.

    Values are read as written (``mask_and_scale=False``): nodata stays the raster's nodata, and
    ``_FillValue`` stays in ``attrs``, as rioxarray gives them. Other keywords go to ``xarray.open_zarr``.

    Parameters
    ----------
    store : str or path
    verify : {"cheap", "full", False}, default "cheap"
        ``"cheap"`` checks that every stored chunk of the patches is there (one listing of the
        store); ``"full"`` also reads every patch row and compares it with the content digests
        logged as it was written (a pass over the store, a band at a time); False checks nothing
        but the completion marker.

    Raises
    ------
    IncompleteStoreError
        When the run writing the store has not finished, or the path holds no store; running it
        again finishes it.
    DamagedOutputError
        When a stored chunk is missing, or (``verify="full"``) a patch row differs from what was written.
    """
    import xarray as xr

    check_verify(verify, VERIFY, "stored chunk")
    path = check_path(store, "store", "patches.zarr")
    group = _open_group(path)
    if group is None or not group.attrs.get(COMPLETE):
        _refuse_incomplete(path, group)
    if verify:
        _check_chunks(path, group)
    kwargs.setdefault("decode_coords", "all")  # the grid mapping (spatial_ref) is a coordinate, as rioxarray has it
    ds = xr.open_zarr(str(path), mask_and_scale=mask_and_scale, consolidated=True, **kwargs)
    if verify == "full":
        _check_pixels(path, xr.open_zarr(str(path), mask_and_scale=False, consolidated=True, chunks=None), group)
    return ds


def _refuse_incomplete(path: Path, group) -> None:
    if group is None and not path.exists():
        raise IncompleteStoreError(
            f"there is no Zarr store at {str(path)!r}; check the path, or write it first with .patches.to_zarr(...)"
        )
    if group is None:
        raise IncompleteStoreError(
            f"{str(path)!r} is not a Zarr store written by patchkit (or its metadata is damaged); write it with "
            ".patches.to_zarr(..., mode='w')"
        )
    if FINGERPRINT not in group.attrs:
        raise IncompleteStoreError(
            f"{str(path)!r} is a Zarr store, but not one written by patchkit (it has no {FINGERPRINT!r}); open it with "
            "xarray.open_zarr, or write patches to another path with .patches.to_zarr(...)"
        )
    done = sum(b - a for a, b in group.attrs.get(ROWS_DONE, []))
    raise IncompleteStoreError(
        f"the Zarr store {str(path)!r} is not complete ({done} patch rows written): the run writing it "
        "stopped or is still going; run the same .patches.to_zarr(...) again to finish it"
    )


def _check_chunks(path: Path, group) -> None:
    """Raise :class:`DamagedOutputError` when a stored chunk of a patch variable is missing."""
    for name in _patch_names(group):
        array = group[name]
        if array.nchunks_initialized != array.nchunks:
            raise DamagedOutputError(
                f"the Zarr store {str(path)!r} is damaged: {array.nchunks - array.nchunks_initialized} of the "
                f"{array.nchunks} stored chunks of {name!r} are missing; write it again with "
                ".patches.to_zarr(..., mode='w')"
            )


def _patch_names(group) -> list[str]:
    """The patch variables of a store: the arrays with a patch grid dim."""
    return [name for name, array in group.arrays()
            if {"patch_row", "patch"} & set(array.metadata.dimension_names or ())]


def _check_pixels(path: Path, ds, group) -> None:
    """Raise :class:`DamagedOutputError` when a logged band's patch rows differ from their digests."""
    patches = ds[[n for n in _patch_names(group) if n in ds.data_vars]]
    for a, b, logged in group.attrs.get(BANDS, []):
        if "patch" in patches.dims:
            places = patches["patch_row"].values
            band = patches.isel(patch=slice(int(np.searchsorted(places, a)), int(np.searchsorted(places, b))))
        else:
            band = patches.isel(patch_row=slice(a, b))
        try:
            band = band.load()
        except Exception as err:  # zarr's and the codecs' own errors for a chunk cut short or garbled
            raise DamagedOutputError(
                f"the Zarr store {str(path)!r} is damaged: patch rows {a}-{b - 1} do not read ({type(err).__name__}: {err}); "
                "write it again with .patches.to_zarr(..., mode='w')"
            ) from err
        if band_digest(band, slice(a, b)) != logged:
            raise DamagedOutputError(
                f"the Zarr store {str(path)!r} is damaged: patch rows {a}-{b - 1} differ from what was written; "
                "write it again with .patches.to_zarr(..., mode='w')"
            )
