"""The ``.patches`` accessor on xarray DataArrays and Datasets, registered on ``import patchkit``.

Thin: every method builds a :class:`~patchkit.core.spec.PatchSpec` and hands over to
:mod:`patchkit.labelled.layout` (dims, data layout, labels), which uses :mod:`patchkit.core.chunking`,
:mod:`patchkit.labelled.geo` and :mod:`patchkit.labelled.nodata`. As xarray advises, ``__init__`` only stores the
object; arguments are checked in the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import xarray as xr

from . import layout
from ..core.budget import DEFAULT_MAX_MEMORY, LAZY_CHUNK_MEMORY, Plan
from ..core.spec import PatchSpec

__all__ = ["PatchesAccessor"]

_PARAMETERS = """
        sizes, strides, rates, padding
            As ``tf.image.extract_patches``: ints, ``(rows, cols)`` or 4-vectors; ``"VALID"`` or ``"SAME"``
            (zero padding, whose cells get extrapolated coordinates).
        max_nodata_fraction : float in [0, 1], optional
            Keep only patches whose share of nodata (the raster's nodata or ``_FillValue``, NaN,
            padded cells; over every value of the patch, all leading dims and bands together) is at
            most this. The patches then lie along one ``patch`` dim with ``patch_row`` and
            ``patch_col`` coordinates. Counting reads the data once; no dropped patch is kept.
        spatial_dims : (str, str), optional
            The ``(y, x)`` dims; found as rioxarray finds them (``y``/``x``, ``lat``/``lon``...) if not given.
        channel_dims : sequence of str, optional
            Dims kept inside each patch; by default dims named like ``band`` and any after the
            spatial dims. All other dims lead the result (such as ``time``).
        backend : {"auto", "numpy", "tensorflow"}
"""


class PatchesAccessor:
    """Patches of a georeferenced DataArray or Dataset: ``da.patches.extract(256, 128)``.

    Every patch keeps its place on the map: 2-D coordinates ``y(patch_row, y)`` and ``x(patch_col, x)``
    hold the real-world centre of every patch pixel, the CRS (``spatial_ref``), attrs, nodata and
    ``_FillValue`` are kept, and :func:`patchkit.patch_transform` gives any patch's affine transform.
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def extract(self, sizes, strides, rates=1, padding: str = "VALID", *, backend: str = "auto",
                max_nodata_fraction: float | None = None, spatial_dims: Sequence[str] | None = None,
                channel_dims: Sequence[str] | None = None, chunk_memory: int | str = LAZY_CHUNK_MEMORY) -> Any:
        """All patches, labelled: dims ``(*leading, "patch_row", "patch_col", *channels, y, x)``.

        Parameters
        ----------%s        chunk_memory : int or str, default "128MiB"
            On dask-backed data: the memory that computing one chunk (one row band of patches) may
            take, its input rows included; it sets the chunk size of the lazy result.

        Returns
        -------
        DataArray or Dataset
            Pixels bit-exact with :func:`patchkit.extract_patches`. On dask-backed data the result is
            lazy: a dask array with one chunk per row band of patches, each reading only its rows.
        """
        spec = PatchSpec(sizes, strides, rates, padding)
        return layout.extract(self._obj, spec, backend=backend, max_nodata_fraction=max_nodata_fraction,
                                spatial_dims=spatial_dims, channel_dims=channel_dims, chunk_memory=chunk_memory)

    def iter(self, sizes, strides, rates=1, padding: str = "VALID", *, max_memory: int | str = DEFAULT_MAX_MEMORY,
             backend: str = "auto", max_nodata_fraction: float | None = None,
             spatial_dims: Sequence[str] | None = None, channel_dims: Sequence[str] | None = None) -> Iterator:
        """Yield the patches one row band at a time, each labelled as :meth:`extract` labels them.

        Parameters
        ----------%s        max_memory : int or str, default "512MiB"
            Bound on all that the extraction holds at once, as :func:`patchkit.iter_patches`.

        Yields
        ------
        DataArray or Dataset
            One band of patch rows (``patch_row`` gives which). Its data may be a view of a buffer
            that the next band reuses: ``.copy(deep=True)`` a band you keep.
        """
        spec = PatchSpec(sizes, strides, rates, padding)
        return layout.iterate(self._obj, spec, max_memory=max_memory, backend=backend,
                                max_nodata_fraction=max_nodata_fraction, spatial_dims=spatial_dims,
                                channel_dims=channel_dims)

    def grid(self, sizes, strides, rates=1, padding: str = "VALID", *, max_nodata_fraction: float | None = None,
             path: str | Path | None = None, spatial_dims: Sequence[str] | None = None):
        """Every patch's place, without extracting: a pandas table.

        Columns ``row``, ``col``, ``left``, ``bottom``, ``right``, ``top`` (in the CRS, kept in
        ``table.attrs["crs"]``) and ``transform`` (``affine.Affine``); with ``max_nodata_fraction``
        also ``nodata_fraction``, and only the kept patches. ``path`` (``.geojson``, ``.gpkg``...)
        also writes the patches as polygons through geopandas.
        """
        spec = PatchSpec(sizes, strides, rates, padding)
        return layout.grid(self._obj, spec, max_nodata_fraction=max_nodata_fraction, path=path,
                             spatial_dims=spatial_dims)

    def plan(self, sizes, strides, rates=1, padding: str = "VALID", *, sink: str | None = None,
             max_memory: int | str = DEFAULT_MAX_MEMORY, backend: str = "auto", spatial_dims: Sequence[str] | None = None,
             channel_dims: Sequence[str] | None = None, **options: Any) -> Plan:
        """The row bands that :meth:`iter` (or, given ``sink``, that sink) streams under ``max_memory``, reading no pixel.

        ``patchkit inspect``, the ``extract_patches`` template and the explorer report this plan, and
        it is the plan the sink then follows (a sink holding buffers of its own, such as Zarr's chunk
        buffers, leaves the bands less of ``max_memory``).

        Parameters
        ----------
        sizes, strides, rates, padding
            As ``tf.image.extract_patches``.
        max_memory : int or str, default "512MiB"
            The budget, as :meth:`iter` and the sinks take it.
        sink : str, optional
            A name from ``patchkit.sinks.available()``; None plans :meth:`iter`'s bands.
        backend, spatial_dims, channel_dims
            As :meth:`iter`.
        **options
            The sink's own options that change its buffers (Zarr's ``compression``, ``chunk_patches``);
            others are ignored, so the keywords of :meth:`to` can be passed as they are.

        Returns
        -------
        patchkit.Plan
            ``bands`` (slices of patch rows), ``band_rows``, ``peak`` (bytes held at once), ``max_memory``.
        """
        spec = PatchSpec(sizes, strides, rates, padding)
        if sink is None:
            return layout.band_plan(self._obj, spec, max_memory=max_memory, backend=backend, spatial_dims=spatial_dims,
                                    channel_dims=channel_dims)
        from ..sinks import get

        return get(sink).plan(self._obj, spec, max_memory=max_memory, backend=backend, spatial_dims=spatial_dims,
                              channel_dims=channel_dims, **options)

    def to(self, sink: str, path: str | Path, sizes, strides, rates=1, padding: str = "VALID", **options: Any) -> Path:
        """Write the patches to ``sink`` at ``path``, band by band under ``max_memory``, resumably.

        The one entry to every sink: ``"zarr"``, ``"geotiff"``, ``"tfrecord"`` (the same as
        :meth:`to_zarr`, :meth:`to_geotiffs`, :meth:`to_tfrecord`) and any sink a package installs
        (``patchkit.sinks.available()`` lists them). A run killed at any point and run again with the
        same arguments finishes the output; it reads as complete only once it is.

        Parameters
        ----------
        sink : str
            A name from ``patchkit.sinks.available()``.
        path : path
            The sink's output (a store, a folder, a prefix).
        sizes, strides, rates, padding
            As ``tf.image.extract_patches``.
        **options
            ``max_memory``, ``mode``, ``max_nodata_fraction``, ``backend``, ``progress``, ``spatial_dims``,
            ``channel_dims`` and the sink's own (``compression``, ``compress``, ``shard_size``...).

        Returns
        -------
        pathlib.Path
            Where the output is; ``patchkit.sinks.get(sink).open(path)`` reads it.
        """
        from ..sinks import get

        return get(sink).write(self._obj, path, PatchSpec(sizes, strides, rates, padding), **options)

    def to_zarr(self, store: str | Path, sizes, strides, rates=1, padding: str = "VALID", *,
                max_memory: int | str = DEFAULT_MAX_MEMORY, mode: str | None = None,
                max_nodata_fraction: float | None = None, compression: Any = "default", chunk_patches: int | None = None,
                backend: str = "auto", progress: bool = True, spatial_dims: Sequence[str] | None = None,
                channel_dims: Sequence[str] | None = None, scheduler: Any = None) -> Path:
        """Write the patches to a Zarr (v3) store, one row band at a time, resumably.

        The store holds what :meth:`extract` returns (coordinates, CRS, attrs, the spec); read it
        with :func:`patchkit.open_patches`. A run killed at any point and run again with the same
        arguments finishes the store, skipping the bands already written.

        Parameters
        ----------
        store : path
            A local directory.%s        max_memory : int or str, default "512MiB"
            Bound on all that the extraction holds at once (as :meth:`iter`).
        mode : {None, "w"}
            None: create the store, resume it, or return at once when it is complete; a store
            written from another source, spec or options is refused. "w": overwrite.
        compression : "default", None or a zarr codec
            "default" is zarr's (zstd); None stores raw bytes.
        chunk_patches : int, optional
            Patches per stored chunk along ``patch_col`` (or ``patch``); by default about 4 MiB.
            Each writer thread holds two chunks' bytes, counted against ``max_memory``.
        progress : bool
            Show a tqdm progress bar: patches, bytes written and GB/s.
        scheduler : None, str or distributed.Client
            Where the bands run. None: on the active ``distributed.Client`` when there is one (dask's
            convention), else on local threads; a scheduler's address (``"tcp://host:8786"``) or a
            ``Client``: on that cluster; ``"threads"``: here. On a cluster each band is a task that
            reads its own input rows from the source (so ``store`` and a file-backed source must be
            reachable from the workers), makes its patches and writes its stored chunks; the driver
            logs each band as it lands. ``max_memory`` then bounds each task. The store is the same,
            byte for byte, as a local run's.

        Returns
        -------
        pathlib.Path
            The store.

        Raises
        ------
        ForeignStoreError
            ``store`` holds something else and ``mode`` is not "w".
        SinkWriteError
            Writing failed (permissions, a full disk); the finished bands are kept for a rerun.
        ClusterError
            The scheduler cannot be reached or was lost, or a band's workers kept dying; a rerun resumes.
        """
        return self.to("zarr", store, sizes, strides, rates, padding, max_memory=max_memory, mode=mode,
                       max_nodata_fraction=max_nodata_fraction, compression=compression, chunk_patches=chunk_patches,
                       backend=backend, progress=progress, spatial_dims=spatial_dims, channel_dims=channel_dims,
                       scheduler=scheduler)

    def to_geotiffs(self, folder: str | Path, sizes, strides, rates=1, padding: str = "VALID", *,
                    max_memory: int | str = DEFAULT_MAX_MEMORY, mode: str | None = None,
                    max_nodata_fraction: float | None = None, compress: str | None = "deflate", backend: str = "auto",
                    progress: bool = True, spatial_dims: Sequence[str] | None = None,
                    channel_dims: Sequence[str] | None = None, scheduler: Any = None) -> Path:
        """Write one GeoTIFF chip per (kept) patch, and a GeoJSON index of them, resumably.

        Each chip ``r{row}_c{col}.tif`` has the patch's transform, the CRS and nodata; its bands are
        the non-spatial dims flattened (band descriptions name them). ``index.geojson``, written
        last, lists every chip with its bounds; :func:`patchkit.sinks.geotiff.read_index` reads it.

        Parameters
        ----------
        folder : path
            A directory (created).%s        max_memory : int or str, default "512MiB"
            Bound on all that the extraction holds at once (as :meth:`iter`).
        mode : {None, "w"}
            None: create, resume (writing only missing chips) or return when complete; a folder
            from another run is refused. "w": overwrite.
        compress : str or None, default "deflate"
            GDAL compression ("deflate", "lzw", "zstd", ...); None for none.
        progress : bool
            Show a tqdm progress bar: patches, bytes written and GB/s.
        scheduler : None, str or distributed.Client
            Where the bands run, as :meth:`to_zarr`: on a cluster each band is a task that reads its
            input rows and writes its chips (the folder must be reachable from the workers); the
            driver logs each band and writes the index. The chips are the same, byte for byte.

        Returns
        -------
        pathlib.Path
            The folder.
        """
        return self.to("geotiff", folder, sizes, strides, rates, padding, max_memory=max_memory, mode=mode,
                       max_nodata_fraction=max_nodata_fraction, compress=compress, backend=backend, progress=progress,
                       spatial_dims=spatial_dims, channel_dims=channel_dims, scheduler=scheduler)

    def to_tfrecord(self, prefix: str | Path, sizes, strides, rates=1, padding: str = "VALID", **kwargs) -> Path:
        """Sharded, resumable TFRecord files of ``tf.train.Example`` patches, and a manifest.

        Keywords (``max_memory``, ``shard_size``, ``max_nodata_fraction``, ``compression``, ``mode``,
        ``progress``, ``backend``) are those of :func:`patchkit.to_tfrecord`; read the set back with
        :func:`patchkit.read_tfrecord`.
        """
        return self.to("tfrecord", prefix, sizes, strides, rates, padding, **kwargs)

    def to_tf_dataset(self, sizes, strides, rates=1, padding: str = "VALID", **kwargs):
        """A ``tf.data.Dataset`` of the patches, cut band by band as it is iterated.

        Keywords (``batch_size``, ``prefetch``, ``max_memory``, ``max_nodata_fraction``,
        ``shuffle_buffer``) are those of :func:`patchkit.to_tf_dataset`.
        """
        from .tfdata import to_tf_dataset

        return to_tf_dataset(self._obj, sizes, strides, rates, padding, **kwargs)

    def predict(self, model, sizes, strides, rates=1, padding: str = "SAME", **kwargs):
        """This scene run through ``model`` patch by patch, predictions blended back onto its grid in one pass.

        Keywords (``batch_size``, ``blend``, ``sigma_scale``, ``crop``, ``max_memory``, ``gpu_memory``, ``out``,
        ``dtype``, ``backend``, ``nan_policy``, ``fill_value``) are those of :func:`patchkit.predict`.
        """
        from ..stitch import predict

        return predict(self._obj, model, sizes, strides, rates, padding, **kwargs)

    def explore(self, sizes=None, strides=None, rates=1, padding: str = "VALID", **kwargs):
        """An interactive :class:`patchkit.explorer.PatchExplorer` of this DataArray (ipywidgets).

        The grid, patch count, memory plan and nodata share update as the controls move, without
        extracting; a decimated preview shows the grid; a button runs a sink. Keywords are those of
        ``PatchExplorer`` (``max_memory``, ``max_nodata_fraction``, ``sink``, ``path``...).
        """
        from ..explorer import PatchExplorer

        return PatchExplorer(self._obj, sizes, strides, rates, padding, **kwargs)

    extract.__doc__ = extract.__doc__ % _PARAMETERS
    to_geotiffs.__doc__ = to_geotiffs.__doc__ % _PARAMETERS
    to_zarr.__doc__ = to_zarr.__doc__ % _PARAMETERS
    iter.__doc__ = iter.__doc__ % _PARAMETERS


xr.register_dataarray_accessor("patches")(PatchesAccessor)
xr.register_dataset_accessor("patches")(PatchesAccessor)
