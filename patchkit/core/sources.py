"""What an image can be: a numpy array, a ``tf.Tensor``, a dask array, or a lazily read array.

:func:`as_source` wraps the input once, validating its rank, emptiness and dtype before anything is
allocated, and gives the rest of patchkit one interface: ``shape``, ``dtype``, whether reading rows
copies them (``lazy``), the source's ``chunks`` (what a read materialises), and :meth:`Source.read_rows`.
Nothing here imports TensorFlow or dask: their objects are recognised by their type's module.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np

from .dtypes import check_dtype
from ..errors import PatchkitError, PatchkitTypeError, PatchkitValueError, SourceReadError, shown
from .spec import _four_d

__all__ = ["Source", "as_source", "is_tensor", "is_symbolic", "is_dask", "origin_of", "reading"]


#: Modules whose objects may be TensorFlow tensors or variables.
_TF_MODULES = ("tensorflow", "tf_keras", "keras")
#: Packages whose errors, raised while a source is read, are read errors (besides any ``OSError``).
_READER_MODULES = ("rasterio", "zarr", "numcodecs", "h5py", "netCDF4", "tifffile", "fsspec")


def origin_of(obj: Any) -> str | None:
    """The file an xarray object was read from (``encoding["source"]``, where xarray's backends and
    rioxarray record it), or None."""
    encoding = getattr(obj, "encoding", None)
    source = encoding.get("source") if isinstance(encoding, dict) else None
    return str(source) if source else None


def _is_read_error(err: BaseException) -> bool:
    return isinstance(err, OSError) or (type(err).__module__ or "").startswith(_READER_MODULES)


def _causes(err: BaseException) -> str:
    """The messages of ``err``'s chained causes (GDAL's real error hides behind "See previous exception")."""
    seen, parts, cause = set(), [], err.__cause__ or err.__context__
    while cause is not None and id(cause) not in seen and len(parts) < 3:
        seen.add(id(cause))
        parts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return f" (caused by {'; '.join(parts)})" if parts else ""


@contextmanager
def reading(origin: str | None) -> Iterator[None]:
    """Turn a read error of the source (an ``OSError``, or an error of rasterio, zarr, h5py...) into a
    :class:`SourceReadError` that names the file ``origin`` (when known) and says what to do.

    Patchkit's own errors and errors that are not about reading (a ``MemoryError``) pass unchanged.
    A remote ``origin`` (a URL, ``/vsicurl/``...: :mod:`patchkit.core.remote`) gets GDAL's bounded HTTP
    defaults before it is read, and its error says what the server answered, what to check, and that a
    rerun resumes.
    """
    from contextlib import nullcontext

    from .remote import configure, is_remote, listening, read_error

    remote = is_remote(origin)
    configure(origin)
    try:
        with listening(origin) if remote else nullcontext([]) as codes:
            yield
    except PatchkitError:
        raise
    except Exception as err:
        if not _is_read_error(err):
            raise
        if remote:
            raise read_error(origin, err, codes, _causes(err)) from err
        where = f"the file {origin!r}" if origin else "the source data (no file name is recorded)"
        raise SourceReadError(
            f"reading {where} failed: {type(err).__name__}: {err}{_causes(err)}; the file is probably damaged or "
            "truncated (an interrupted download or copy): re-download or re-create it, and check the path"
        ) from err


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_tensor(obj: Any) -> bool:
    """True for an eager TensorFlow tensor or variable (without importing TensorFlow)."""
    return _module(obj).startswith(_TF_MODULES) and hasattr(obj, "numpy") and hasattr(obj, "device")


def is_symbolic(obj: Any) -> bool:
    """True for a tensor without values yet: inside ``tf.function``, ``tf.data``, Keras, TF1 graphs.

    Also a variable read while a graph is being built (``tf.executing_eagerly()`` is false).
    TensorFlow is not imported here: such objects exist only once it is.
    """
    if not _module(obj).startswith(_TF_MODULES):
        return False
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.is_tensor(obj):
        return False
    return tf.is_symbolic_tensor(obj) or not tf.executing_eagerly()


def is_dask(obj: Any) -> bool:
    """True for a dask array (without importing dask)."""
    return _module(obj).startswith("dask") and hasattr(obj, "chunks") and hasattr(obj, "compute")


@dataclass(frozen=True)
class Source:
    """An image with a uniform way to read rows of it.

    Attributes
    ----------
    data : object
        The wrapped array: an ndarray, a ``tf.Tensor``, a dask array, or an object with ``shape``,
        ``dtype`` and numpy-style ``__getitem__`` (zarr, h5py, xarray's lazy arrays).
    kind : {"numpy", "tensorflow", "dask", "lazy"}
    shape : tuple of int
        ``(batch, height, width, channels)``.
    dtype : numpy.dtype
    chunks : tuple of tuple of int, optional
        Block sizes along each axis (dask style) when reading materialises whole blocks.
    origin : str, optional
        The file the data is read from, named by read errors (:func:`reading`).
    rows : callable, optional
        ``rows(start, stop)``: image rows ``[start, stop)`` of a dask source as a dask array cut before
        ``data`` was arranged, so that dask reads only those rows of each chunk (after a reshape it
        reads whole chunks); None: ``data`` is sliced.
    """

    data: Any
    kind: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    chunks: tuple[tuple[int, ...], ...] | None = None
    origin: str | None = None
    rows: Callable[[int, int], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def lazy(self) -> bool:
        """Whether reading rows makes a copy (so the rows read count against ``max_memory``)."""
        return self.kind in ("dask", "lazy")

    @property
    def concurrent(self) -> bool:
        """Whether its rows may be read on threads, beside other work and several pieces at once: a dask array
        (dask graphs are made to be computed on threads). Not other lazy arrays: an h5py or netCDF4
        variable may not be safe to read from two threads."""
        return self.kind == "dask"

    @property
    def device(self) -> str:
        """The TensorFlow device holding a tensor (``""`` for host arrays)."""
        return getattr(self.data, "device", "") if self.kind == "tensorflow" else ""

    def numpy(self) -> np.ndarray:
        """The whole image as an ndarray, without a copy where possible (not for lazy sources)."""
        if self.kind == "tensorflow":
            return np.asarray(self.data.numpy())
        if self.lazy:
            raise PatchkitValueError("a lazy source is read in row bands, never whole: stream it with iter_patches, "
                                     "or compute it first")
        return self.data

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None, readers: int = 1) -> np.ndarray:
        """Image rows ``[start, stop)`` (inside the image) as an ndarray, written into ``out`` if given.

        A dask source computed on dask's local threads (its default for arrays) or synchronously is
        stored into ``out`` chunk by chunk (``dask.array.store``), ``readers`` chunks at once on local
        threads; other lazy sources, and dask sources under another scheduler (a distributed client),
        are read one column of chunks at a time. Each piece is copied into ``out`` as it comes, so the
        temporaries a read makes stay those :meth:`PatchSpec.band_memory` counts. (A raster opened by
        ``rioxarray.open_rasterio(..., chunks=...)`` with its default lock is read by one thread at a
        time, all files alike; ``lock=False`` gives each thread its own handle: the same pixels.)
        """
        if not self.lazy:
            rows = self.numpy()[:, start:stop]
            if out is None:
                return rows
            np.copyto(out, rows)
            return out
        b, _, w, c = self.shape
        if out is None:
            out = np.empty((b, stop - start, w, c), dtype=self.dtype)
        with reading(self.origin):
            if self.kind != "dask":
                _copy_columns(self.data, start, stop, self.chunks, out)
                return out
            rows = self.data[:, start:stop] if self.rows is None else self.rows(start, stop)
            local = _local_scheduler(self.data)
            if local is None:  # computed where the user's scheduler computes
                _copy_columns(rows, 0, stop - start, self.chunks, out, compute=True)
            elif stop > start:
                import dask.array as da

                threads = local == "threads" and readers > 1
                da.store(rows, out, lock=False, scheduler="threads" if threads else "sync", num_workers=readers)
        return out


def _copy_columns(data: Any, start: int, stop: int, chunks, out: np.ndarray, compute: bool = False) -> None:
    """Copy rows ``[start, stop)`` of ``data`` into ``out`` one column of ``chunks`` at a time (``compute``: a
    dask array's)."""
    edges = np.cumsum((0,) + tuple(chunks[2])) if chunks is not None else np.array([0, out.shape[2]])
    for x0, x1 in zip(edges[:-1].tolist(), edges[1:].tolist()):
        piece = data[:, start:stop, x0:x1]
        out[:, :, x0:x1] = np.asarray(piece.compute() if compute else piece)
        del piece


def _local_scheduler(data: Any) -> str | None:
    """``"threads"`` or ``"sync"`` when dask would compute ``data`` on its local threads or synchronously; None
    under another scheduler (a distributed client, processes)."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    scheduler = get_scheduler(collections=[data])
    return {dask.threaded.get: "threads", dask.local.get_sync: "sync"}.get(scheduler)


def _normalize_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | None:
    """Dask-style chunks from dask's tuple of tuples or zarr/h5py's tuple of ints."""
    if chunks is None:
        return None
    chunks = tuple(chunks)
    if all(isinstance(c, tuple) for c in chunks):
        return chunks
    blocks = []
    for n, size in zip(shape, chunks):
        size = int(size)
        blocks.append((size,) * (n // size) + ((n % size,) if n % size else ()))
    return tuple(blocks)


def as_source(images: Any, name: str = "images", allow_empty: bool = False, origin: str | None = None) -> Source:
    """Wrap ``images`` as a :class:`Source`, validating rank, emptiness and dtype.

    Accepts numpy arrays (and anything ``np.asarray`` turns into a numeric array, such as nested
    lists), ``tf.Tensor``, dask arrays, xarray DataArrays (their data) and lazily read arrays with
    ``shape``, ``dtype`` and ``__getitem__`` (zarr, h5py). A :class:`Source` is returned as it is.
    ``origin`` names the file read errors mention (a DataArray's own ``encoding["source"]`` otherwise).

    Raises
    ------
    InvalidImageError
        Not 4-D, or an axis of length 0 (unless ``allow_empty``: TensorFlow's op takes empty images).
    UnsupportedDtypeError
        A dtype TensorFlow's op does not accept.
    PatchkitTypeError
        ``None`` or an object that is not an array.
    """
    if isinstance(images, Source):
        return images
    if images is None:
        raise PatchkitTypeError(f"{name} is None; pass a 4-D [batch, height, width, channels] array")
    if isinstance(images, (str, bytes, os.PathLike)):
        raise PatchkitTypeError(
            f"{name}={shown(images)} is a {type(images).__name__} (a path?), not an array; open it first, e.g. "
            "da = rioxarray.open_rasterio(path), and use da.patches.extract(...), or pass a numpy array"
        )
    if _module(images).startswith("xarray") and hasattr(images, "variable"):
        origin = origin or origin_of(images)
        with reading(origin):
            images = images.data
    source = _wrap(images, name, allow_empty)
    return source if origin is None else replace(source, origin=origin)


def _wrap(images: Any, name: str, allow_empty: bool) -> Source:
    """The :class:`Source` of an array that is not an xarray object (see :func:`as_source`)."""
    if type(images).__name__ == "KerasTensor":
        raise PatchkitTypeError(
            f"{name} is a Keras symbolic input ({images!r}), which has no values to cut; inside a Keras model "
            "use the layer patchkit.keras.ExtractPatches(sizes, strides, rates, padding)"
        )
    if is_tensor(images):
        shape = tuple(int(d) for d in images.shape)
        return _checked(images, "tensorflow", shape, images.dtype, None, name, allow_empty)
    if is_dask(images):
        shape = tuple(int(d) for d in images.shape)
        return _checked(images, "dask", shape, images.dtype, _normalize_chunks(images.chunks, shape), name, allow_empty)
    if isinstance(images, np.ndarray):
        return _checked(images, "numpy", images.shape, images.dtype, None, name, allow_empty)
    if hasattr(images, "shape") and hasattr(images, "dtype") and hasattr(images, "__getitem__"):
        shape = tuple(int(d) for d in images.shape)
        chunks = _normalize_chunks(getattr(images, "chunks", None), shape)
        return _checked(images, "lazy", shape, images.dtype, chunks, name, allow_empty)
    not_array = PatchkitTypeError(
        f"{name} is a {type(images).__name__}, which is not an array; pass a numpy array, a tf.Tensor "
        "or a dask array of shape [batch, height, width, channels]"
    )
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as exc:
        raise not_array from exc
    if array.ndim == 0 and array.dtype == object:
        raise not_array
    return _checked(array, "numpy", array.shape, array.dtype, None, name, allow_empty)


def _checked(data, kind, shape, dtype, chunks, name, allow_empty=False) -> Source:
    return Source(data, kind, _four_d(shape, allow_empty), check_dtype(dtype, name), chunks)
