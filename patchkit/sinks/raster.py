"""Raster sinks: where an image made band by band goes: an array in memory, or a GeoTIFF or a Zarr store
written beside its path and moved into place when whole.

Every sink has one interface: :meth:`Raster.band` hands out the buffer of a band of rows (``[N, h, W,
M]``), :meth:`Raster.commit` writes it, and :meth:`Raster.close` (the end of the sink's ``with``
block) moves a file into place, or, after an error, deletes what was written: a run that fails or is
killed never leaves a partial image at the path. :func:`out_path` and :func:`check_room` refuse, before any
work, a path that is no raster or cannot take the image; :func:`writing` turns the errors of writing
(``OSError``, and rasterio's and zarr's own, which carry no errno) into :class:`~patchkit.errors.SinkWriteError`.
"""

from __future__ import annotations

import abc
import errno
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..core.budget import require_memory
from ..core.units import format_bytes
from ..errors import PatchkitError, PatchkitValueError, SinkWriteError, shown
from ._store import move_into_place, partial_path, remove, short_write

__all__ = ["Raster", "ArrayRaster", "FileRaster", "GeoTiffRaster", "ZarrRaster", "SINKS", "SUFFIXES", "ZARR_CHUNK",
           "sink_class", "out_path", "check_room", "writing", "WRITERS"]

#: Largest Zarr chunk (rows by the whole width) a ``.zarr`` is written with.
ZARR_CHUNK = 32 * 2**20
#: Packages whose own exceptions, besides ``OSError``, are failed writes (:func:`writing`).
WRITERS = ("rasterio", "zarr", "numcodecs")
#: What to do about a failed write, by its errno.
_WRITE_FIXES = {errno.ENOSPC: "free some space", errno.EFBIG: "raise the file size limit (ulimit -f)",
                errno.EACCES: "choose a writable path (or fix its permissions)", errno.EROFS: "choose a writable path"}


# --------------------------------------------------------------------------------------------------
# The sinks
# --------------------------------------------------------------------------------------------------


class Raster(abc.ABC):
    """An image ``[N, H, W, M]`` made in bands of up to ``rows`` rows: :meth:`band`, :meth:`commit`, :meth:`close`.

    ``copies`` counts the copies of a band the sink holds while writing it, for a memory plan;
    ``channels_first`` says whether a band's buffer keeps each channel's rows together (``[N, M, h, W]``
    in memory, handed out as a ``[N, h, W, M]`` view).
    """

    copies: ClassVar[int] = 0
    #: Whether the sink writes through GDAL, whose block cache keeps written blocks until they are flushed.
    through_gdal: ClassVar[bool] = False

    def __init__(self, shape4: tuple[int, int, int, int], rows: int, dtype: np.dtype, channels_first: bool) -> None:
        self.shape4, self.rows, self.dtype, self.channels_first = tuple(shape4), rows, np.dtype(dtype), channels_first

    @abc.abstractmethod
    def band(self, y0: int, y1: int) -> np.ndarray:
        """The buffer ``[N, y1 - y0, W, M]`` of rows ``[y0, y1)``, to fill and :meth:`commit`."""

    def commit(self, y0: int, y1: int, block: np.ndarray) -> None:
        """Write rows ``[y0, y1)``, filled in ``block`` (the buffer :meth:`band` handed out)."""

    def close(self, keep: bool = True) -> None:
        """Finish the image (``keep``), or drop what was written after an error."""

    def __enter__(self) -> "Raster":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(keep=kind is None)


class ArrayRaster(Raster):
    """The whole image in memory: ``array`` (``[N, M, H, W]`` when ``channels_first``, else ``[N, H, W, M]``),
    filled band by band in place."""

    def __init__(self, shape4: tuple[int, int, int, int], dtype: np.dtype, channels_first: bool, rows: int = 0) -> None:
        super().__init__(shape4, rows, dtype, channels_first)
        n, h, w, m = shape4
        self.array = np.empty((n, m, h, w) if channels_first else shape4, dtype)
        self.view = self.array.transpose(0, 2, 3, 1) if channels_first else self.array

    def band(self, y0: int, y1: int) -> np.ndarray:
        return self.view[:, y0:y1]


class FileRaster(Raster):
    """An image file (or store) at ``path``, written from one reused band buffer.

    Entering the sink creates the file under a hidden temporary name beside ``path`` (after deleting those
    a killed run left there; missing folders are made); :meth:`close` checks it and moves it into place.
    Errors of writing are :class:`SinkWriteError` naming ``path`` (:func:`writing`). Subclasses write:
    ``_open(scratch)``, ``_write(y0, y1, block)``, ``_close()`` and ``_check(scratch)``.
    """

    def __init__(self, path: Path, shape4: tuple[int, int, int, int], rows: int, dtype: np.dtype,
                 channels_first: bool) -> None:
        super().__init__(shape4, rows, dtype, channels_first)
        n, _, w, m = shape4
        self.path, self.nbytes = Path(path), math.prod(shape4) * self.dtype.itemsize
        self.buffer = np.empty(n * rows * w * m, self.dtype)
        self.scratch: Path | None = None
        self.kept: Path | None = None  # a resumable image's scratch: kept after an error, opened again to resume

    def resumable(self, scratch: Path) -> "FileRaster":
        """Write under ``scratch`` (beside :attr:`path`), keep it after an error and, when it exists, open it to
        finish it (a rerun resumes); each commit reaches the file before it returns."""
        self.kept = Path(scratch)
        return self

    def __enter__(self) -> "FileRaster":
        self.scratch = self.kept or partial_path(self.path, self.path.suffix)
        try:
            with writing(self.path, self.nbytes):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.kept is not None and self.kept.exists():
                    self._reopen(self.scratch)
                else:
                    self._open(self.scratch)
                    if self.kept is not None:
                        self._flush()
        except BaseException:
            if self.kept is None:
                remove(self.scratch, strict=False)
            raise
        return self

    def band(self, y0: int, y1: int) -> np.ndarray:
        n, _, w, m = self.shape4
        size = n * (y1 - y0) * w * m
        if self.channels_first:
            return self.buffer[:size].reshape(n, m, y1 - y0, w).transpose(0, 2, 3, 1)
        return self.buffer[:size].reshape(n, y1 - y0, w, m)

    def commit(self, y0: int, y1: int, block: np.ndarray) -> None:
        with writing(self.path, self.nbytes):
            self._write(y0, y1, block)
            if self.kept is not None:
                self._flush()

    def close(self, keep: bool = True) -> None:
        """Close the writer; with ``keep``, check the file and move it to ``path``. The temporary name goes either
        way, but for a resumable image's after an error."""
        try:
            with writing(self.path, self.nbytes):
                self._close()
                if keep:
                    self._check(self.scratch)
                    move_into_place(self.scratch, self.path)
        finally:
            if keep or self.kept is None:
                remove(self.scratch, strict=False)

    @abc.abstractmethod
    def _open(self, scratch: Path) -> None:
        """Create the file at ``scratch`` (beside :attr:`path`)."""

    @abc.abstractmethod
    def _write(self, y0: int, y1: int, block: np.ndarray) -> None:
        """Write rows ``[y0, y1)`` from ``block``."""

    def _close(self) -> None:
        pass

    def _check(self, scratch: Path) -> None:
        pass

    def _reopen(self, scratch: Path) -> None:
        """Open the existing file at ``scratch`` to write more rows into it."""
        raise PatchkitValueError(f"{type(self).__name__} cannot resume a partial image; write it again")

    def _flush(self) -> None:
        """Make what was written reach the file (a process killed after this loses none of it)."""


class GeoTiffRaster(FileRaster):
    """A GeoTIFF of one image, one raster band per channel, written with rasterio (CRS, transform and nodata
    included; None leaves them out); it holds the buffer and GDAL's copy of a band.

    Raises
    ------
    PatchkitValueError
        When the image is a stack (``N > 1``; ``leading`` names its dims): a GeoTIFF holds one image.
    """

    copies = 2
    through_gdal = True

    def __init__(self, path: Path, shape4: tuple[int, int, int, int], rows: int, dtype: np.dtype, *, crs: Any = None,
                 transform: Any = None, nodata: Any = None, leading: tuple[str, ...] = ()) -> None:
        if shape4[0] != 1:
            raise PatchkitValueError(
                f"out={str(path)!r}: a GeoTIFF holds one image of bands, but the result has {shape4[0]} images "
                f"({leading or 'batch'}); write to a .zarr store instead, or stitch one image at a time"
            )
        super().__init__(path, shape4, rows, dtype, channels_first=True)
        self.meta = dict(crs=crs, transform=transform, nodata=nodata)
        self._dst = None

    def _open(self, scratch: Path) -> None:
        import warnings

        import rasterio

        _, h, w, m = self.shape4
        profile = dict(driver="GTiff", height=h, width=w, count=m, dtype="uint8" if self.dtype == np.bool_ else self.dtype.name,
                       **self.meta, BIGTIFF="IF_SAFER")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dst = rasterio.open(scratch, "w", **{k: v for k, v in profile.items() if v is not None})

    def _write(self, y0: int, y1: int, block: np.ndarray) -> None:
        from rasterio.windows import Window

        data = block[0].transpose(2, 0, 1)  # [M, h, W], contiguous for channels-first buffers
        self._dst.write(data.view(np.uint8) if self.dtype == np.bool_ else data,
                        window=Window(0, y0, self.shape4[2], y1 - y0))

    def _close(self) -> None:
        if self._dst is not None:
            self._dst.close()

    def _reopen(self, scratch: Path) -> None:
        import warnings

        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dst = rasterio.open(scratch, "r+")

    def _flush(self) -> None:
        """GDAL holds written blocks in its cache until the file closes: close it and open it again."""
        self._dst.close()
        self._reopen(self.scratch)

    def _check(self, scratch: Path) -> None:
        """A GeoTIFF (uncompressed) shorter than its pixels is a short write, which GDAL reports only as a warning."""
        if scratch.stat().st_size < self.nbytes:
            size = scratch.stat().st_size
            raise short_write(scratch, self.nbytes, f"the GeoTIFF has {size} of its {self.nbytes} bytes of pixels")


class ZarrRaster(FileRaster):
    """A Zarr store: the ``template`` through xarray (``compute=False``: metadata and coordinates), then each
    band's values straight into the array's region of rows.

    ``template`` is the image as a DataArray with lazy data whose chunks the store takes (``[*leading,
    *channels, h, w]`` when ``channels_first``, else ``[N, h, w, M]``); ``_FillValue`` moves from its attrs to
    the encoding, where xarray wants it. The values are written raw: a region write through xarray would
    apply the ``scale_factor``/``add_offset`` attrs that rasters carry. It holds the buffer, zarr's
    serialised and compressed chunks, and slack for its codec pipeline.
    """

    copies = 5

    def __init__(self, path: Path, template: Any, rows: int, shape4: tuple[int, int, int, int],
                 channels_first: bool) -> None:
        super().__init__(path, shape4, rows, template.dtype, channels_first)
        self.template, self._array = template, None

    @staticmethod
    def chunk_rows(rows: int, shape4: tuple[int, int, int, int], dtype: np.dtype) -> tuple[int, int]:
        """The rows of a stored chunk (at most :data:`ZARR_CHUNK` bytes, the whole width) and the band height
        to write with: ``rows`` rounded down to whole chunks."""
        n, _, w, m = shape4
        chunk = max(1, min(rows, ZARR_CHUNK // max(1, n * w * m * np.dtype(dtype).itemsize)))
        return chunk, rows // chunk * chunk

    def _open(self, scratch: Path) -> None:
        import warnings

        template = self.template
        name = self._name
        attrs = dict(template.attrs)
        encoding = {k: v for k, v in template.encoding.items() if k in ("_FillValue", "grid_mapping")}
        for key in ("_FillValue", "missing_value"):
            if key in attrs:
                encoding.setdefault("_FillValue", attrs.pop(key))
        lazy = template.copy()
        lazy.attrs, lazy.encoding = attrs, {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            lazy.to_dataset(name=name).to_zarr(scratch, mode="w", compute=False, encoding={name: encoding})
        self._reopen(scratch)

    @property
    def _name(self) -> str:
        return self.template.name if self.template.name is not None else "stitched"

    def _reopen(self, scratch: Path) -> None:
        import zarr

        self._array = zarr.open_group(str(scratch), mode="r+")[self._name]

    def _write(self, y0: int, y1: int, block: np.ndarray) -> None:
        template = self.template
        lead = template.ndim - (2 if self.channels_first else 3)
        data = block.transpose(0, 3, 1, 2) if self.channels_first else block  # the template's order
        shape = template.shape[:lead] + (y1 - y0,) + template.shape[lead + 1:]
        self._array[(slice(None),) * lead + (slice(y0, y1),)] = data.reshape(shape)


#: The file sinks by suffix (lower case).
SINKS: dict[str, type[FileRaster]] = {".tif": GeoTiffRaster, ".tiff": GeoTiffRaster, ".zarr": ZarrRaster}
#: Output suffixes there is a file sink for.
SUFFIXES = tuple(SINKS)


def sink_class(path: Path | None) -> type[Raster]:
    """The sink that writes ``path`` (a path :func:`out_path` accepted): :class:`ArrayRaster` for None."""
    return ArrayRaster if path is None else SINKS[path.suffix.lower()]


# --------------------------------------------------------------------------------------------------
# Before any work: the path, and room for the image
# --------------------------------------------------------------------------------------------------


def out_path(out: Any) -> Path | None:
    """``out`` as a Path of a raster there is a sink for, or None (an image in memory).

    Raises
    ------
    PatchkitValueError
        When ``out`` is not a path ending in one of :data:`SUFFIXES`.
    """
    if out is None:
        return None
    if not isinstance(out, (str, os.PathLike)) or Path(out).suffix.lower() not in SUFFIXES:
        raise PatchkitValueError(
            f"out={shown(out)} is not a path ending in {', '.join(SUFFIXES)}; pass e.g. out='stitched.tif' or "
            "out='stitched.zarr', or None for an in-memory result"
        )
    return Path(out)


def check_room(path: Path | None, nbytes: int) -> None:
    """The image of ``nbytes`` must fit where it goes, memory (``path`` None) or ``path``, before any work.

    Raises
    ------
    OutputTooLargeError
        An in-memory image larger than the memory available.
    SinkWriteError
        A ``path`` that cannot be written (see :func:`_check_out`).
    """
    if path is None:
        require_memory(nbytes, "the stitched image", "stream it to disk with out='stitched.tif' or out='stitched.zarr'")
    else:
        _check_out(path, nbytes)


def _refuse_out(path: Path, why: str, fix: str, code: int) -> SinkWriteError:
    error = SinkWriteError(f"out={str(path)!r} cannot be written: {why}; {fix}")
    error.errno = code
    return error


def _check_out(path: Path, nbytes: int) -> None:
    """Refuse, before any work, an ``out`` that cannot be written (:class:`SinkWriteError` naming it).

    The nearest existing folder on the way to ``path`` must be a folder that takes a new file (a
    file is created there and removed), ``path`` must not be a folder (a GeoTIFF) or a file (a Zarr
    store), and an uncompressed GeoTIFF must fit in the free space there.
    """
    path = path.absolute()
    base = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == Path(p.anchor))
    fix = "choose another path for out"
    if not base.is_dir():
        raise _refuse_out(path, f"{str(base)!r} is a file, not a folder", fix, errno.ENOTDIR)
    kind = "folder" if path.suffix.lower() != ".zarr" else "file"
    if path.exists() and (path.is_dir() if kind == "folder" else not path.is_dir()):
        raise _refuse_out(path, f"it exists and is a {kind}", f"remove it, or {fix}", errno.EEXIST)
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise _refuse_out(path, f"the folder {str(base)!r} does not take new files ({err.strerror or err})",
                          f"{fix} in a writable folder (or fix its permissions)", err.errno or errno.EACCES) from None
    free = shutil.disk_usage(base).free
    if path.suffix.lower() != ".zarr" and nbytes > free:
        raise _refuse_out(path, f"the image takes {format_bytes(nbytes)}, but only {format_bytes(free)} is free there",
                          f"free some space, or {fix} on another disk", errno.ENOSPC)


# --------------------------------------------------------------------------------------------------
# While writing
# --------------------------------------------------------------------------------------------------


@contextmanager
def writing(path: Path | None, nbytes: int = 0, error: Callable[[Exception, OSError], SinkWriteError] | None = None,
            writers: tuple[str, ...] = WRITERS) -> Iterator[None]:
    """Turn an error of writing ``path`` (an ``OSError``, or one of the ``writers`` packages' own) into a
    :class:`SinkWriteError`; patchkit's own errors and anything else pass unchanged.

    The errors of rasterio (``"Write failed"``) and zarr carry no errno: their cause is found as for a
    short write (:func:`patchkit.sinks._store.short_write`: no space for ``nbytes``, or a file size
    limit). ``error(err, cause)`` makes the :class:`SinkWriteError` from the error and that cause (an
    ``OSError`` with an errno); by default it is the stitched image's: "writing the stitched image to
    ``path`` failed: ...; ``fix``, then stitch again".
    """
    try:
        yield
    except PatchkitError:
        raise
    except Exception as err:
        module = type(err).__module__ or ""
        if not (isinstance(err, OSError) or module.startswith(writers)):
            raise
        cause = err if isinstance(err, OSError) and err.errno else short_write(path or Path("."), nbytes, "")
        raise (error or partial(_image_error, path))(err, cause) from err


def _image_error(path: Path | None, err: Exception, cause: OSError) -> SinkWriteError:
    """The :class:`SinkWriteError` of a failed write of a stitched image to ``path``: what, why, and the fix."""
    known = "" if cause is err or cause.errno == errno.EIO else f" ({cause.strerror})"
    fix = _WRITE_FIXES.get(cause.errno, "fix the cause (space, permissions, the path)")
    error = SinkWriteError(f"writing the stitched image to {str(path)!r} failed: {type(err).__name__}: {err}{known}; "
                           f"{fix}, then stitch again")
    error.errno = cause.errno
    return error
