"""The core: TensorFlow's patch geometry and the engine that copies patches, with no xarray in sight.

``spec/`` (geometry: :class:`~patchkit.core.spec.PatchSpec`, one axis, argument normalisation, coverage,
the inverse map stitching uses), ``budget`` (the one memory planner), ``units`` and ``dtypes``,
``sources`` (what an image can be), ``backends/`` (who copies: numpy with its C kernel, TensorFlow,
CuPy; a :class:`~patchkit.core.backends.base.Backend` protocol and a registry), ``plugins`` (the
registries' machinery), ``chunking`` (row bands: ``iter_patches``, lazy dask results), ``tensors``
(inside TensorFlow programs) and ``extract`` (``extract_patches``). Nothing here imports the rooms above.
"""
