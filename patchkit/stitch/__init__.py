"""Patches back to an image: the inverse of extraction, with blending where patches overlap.

Every patch pixel goes back to the input pixel it sampled (:meth:`PatchSpec.positions`: rows
``i * stride - pad_top + a * rate``, columns likewise); padded cells lie outside the image and are
dropped. Where several patches sample a pixel their values are blended (:data:`BLENDS`):

* ``"mean"``, ``"cosine"``, ``"gaussian"``, any ``scipy.signal.windows`` name (``"hamming"``, ``("tukey", 0.5)``,
  ``"hann"``...) and a callable add ``weight * value`` into a float64 (complex128 for complex
  data) accumulator and the weights into a second one, then divide. Weights may be 0 (windows
  with zero ends): a zero-weight tap adds nothing, so a pixel gets the weighted mean of its
  positive-weight taps. A pixel that no patch samples, or only zero-weight taps sample, gets
  ``fill_value``.
* ``"sum"``: every patch pixel's value is added into the pixel it sampled, with no division:
  TensorFlow's ``fold`` with reduction sum, and exactly the gradient of extraction
  (``tape.gradient(tf.image.extract_patches(x, ...), x, output_gradients=patches)``). Floats add
  up in float64 (complex128), integers and bool in int64 (exact, and wrapping like numpy's integer
  addition when the result does not fit the dtype; bool: any), then cast to the patches' dtype.
  Pixels no patch samples get 0, not ``fill_value``: the gradient there is 0.
* ``"none"``: the last write wins, in row-major patch order (the last patch ``(i, j)`` that samples
  the pixel), with no arithmetic.

Exactness: where every patch sampling a pixel holds the same value (as after extraction), the result
is that value bit for bit, for every blend but ``"sum"`` and every dtype (with zero weights: where
some positive weight samples the pixel). For dtypes that float64 holds exactly with room to spare
(floats of up to 32 bits, integers of up to 32 bits, bool) the weighted mean of equal values rounds
back to the value (integers are rounded, then cast). For float64, int64, uint64 and complex types
the accumulator holds deviations from the last-written value (of a positive-weight tap) instead of
the values, so equal values add up to exactly zero and the written value stays, NaN payloads
included. (Signalling NaNs of the narrower floats come back as quiet NaNs, with the same sign and
payload.)

Pixels are added a few output rows at a time by a C kernel (``_kernel.c``, built with the package):
for each row it finds the (patch row, tap row) pairs that sample it and adds each patch's run of taps
along the row into that row's accumulators, which stay in cache (int32 ones for plain means of
integers of up to 16 bits: they hold those sums exactly); the patches are read once, where they lie,
and a band's rows are split between threads. It takes means of floats of up to 32 bits, integers of
up to 32 bits and bool, sums, and the last write. The deviation path (means of float64, int64, uint64
and complex), float16 means, and installs built without a C compiler add through strided views
instead, with the same results bit for bit: along each axis a step takes one patch (its taps), one
kernel tap (every patch's), or a group of ``stride // rate`` consecutive taps of every patch wholly
inside the band (no two of which share a pixel), whichever makes the fewest steps, each one
vectorised addition. Either way each pixel's sum is made in row-major patch order. Zero weights at a
window's ends are dropped like a crop; zeros inside it add nothing.

The image is made in bands of output rows under ``max_memory``: a band's accumulators, the rows of
patches it needs (read from a dask-backed array band by band) and the temporaries. With ``out`` a
``.tif``/``.tiff`` or ``.zarr`` path, each band is written as it is done and no image is held.

The rooms: :mod:`.windows` (the blend windows and the crop), :mod:`.inputs` (the arguments), :mod:`.readers`
(rows of patches from any input), :mod:`patchkit.core.spec.inverse` (which taps land on which pixels),
:mod:`.accumulate` (adding and finishing a band), :mod:`.plan` (a band's memory and the band height),
:mod:`.bands` (the loop over bands), :mod:`.coords` (the result's labels), :mod:`.output` (the result's
sink, from :mod:`patchkit.sinks.raster`); :func:`stitch` runs them in that order.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

from ..core.budget import DEFAULT_MAX_MEMORY, Budget
from ..core.spec import PatchSpec
from ..core.spec.inverse import axis_ops, lines_of, support
from ..sinks.raster import SUFFIXES, check_room, out_path, sink_class
from .bands import run
from .coords import Labels, axis_coordinate
from .inputs import is_labelled, resolve_geometry
from .output import result, sink_for
from .plan import band_height, make_job
from .readers import reader_for
from .predict import predict
from .windows import BLENDS, GAUSSIAN_FLOOR, SIGMA_SCALE, WINDOWS, blend_weights, gaussian, normalize_crop, register_window

__all__ = ["stitch", "predict", "blend_weights", "gaussian", "SIGMA_SCALE", "GAUSSIAN_FLOOR", "normalize_crop", "register_window", "WINDOWS", "BLENDS", "SUFFIXES",
           "axis_ops", "axis_coordinate"]


def stitch(
    patches: Any,
    blend: str | tuple | Callable[[int, int], Any] = "mean",
    *,
    spec: PatchSpec | Mapping | None = None,
    image_shape: Sequence[int] | None = None,
    crop: int | tuple[int, int] = 0,
    out: str | os.PathLike | None = None,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    fill_value: Any = None,
) -> Any:
    """Put patches back together into the image they were cut from, blending where they overlap.

    Parameters
    ----------
    patches : xarray.DataArray, ndarray, dask array or tf.Tensor
        A DataArray made by ``da.patches.extract`` (dims ``(*leading, "patch_row", "patch_col",
        *channels, y, x)``, or ``(*leading, "patch", *channels, y, x)`` when filtered), possibly
        dask-backed (``xr.open_zarr(...)``) and with other channels than the source (a model's
        predictions: any dims may stand between the patch dims and ``y, x``). Or an array in
        TensorFlow's layout ``[batch, out_rows, out_cols, kh * kw * C]`` with ``spec`` and
        ``image_shape``.
    blend : str, tuple or callable, default "mean"
        How overlapping patches combine: ``"mean"``, ``"cosine"`` (weights ``sin^2`` across each
        patch: seams fade; never zero), ``"gaussian"`` (MONAI's Gaussian importance map, sigma an
        eighth of the patch; :func:`gaussian` gives other sigmas), ``"none"`` (the last patch in row-major order wins), a
        ``scipy.signal.windows`` name such as ``"hamming"``, ``"hann"`` or ``("tukey", 0.5)``, or a
        callable ``(kh, kw) -> weights`` (sizes after ``crop``), or ``"sum"`` (no division:
        TensorFlow's ``fold`` and the gradient of extraction). Weights must be finite and at least
        0; zeros are allowed: a pixel only zero-weight taps sample gets ``fill_value`` (see
        :func:`blend_weights`).
    spec : PatchSpec or dict, optional
        The spec the patches were cut with; by default the one a patch array records.
    image_shape : (h, w) or (b, h, w, c), optional
        The source's shape; by default the one a patch array records.
    crop : int or (int, int), default 0
        Pixels (rows, cols) dropped from each side of every patch before blending, for models whose
        patch borders are poor. The outermost patches lose theirs too: image borders that no kept
        part reaches get ``fill_value`` (unless padding put kept parts there).
    out : path ending in .tif, .tiff or .zarr, optional
        Stream the result there band by band and return the path; the image is never held in
        memory. GeoTIFF: through rasterio, one raster band per channel, with CRS, transform and the
        source's nodata (a single image: leading dims must go to Zarr). Zarr: the labelled result's
        metadata and coordinates through xarray, then each band's values into its region of rows
        (chunks are whole bands, or divide them). Written beside ``out`` under a hidden temporary
        name and moved into place when whole (a GeoTIFF's size checked first), replacing what was
        there: a run that fails or is killed never leaves a partial image at ``out``, and running
        it again writes the same bytes.
    max_memory : int or str, default "512MiB"
        Bound on what stitching holds besides the patches and the result: a band's accumulators,
        the rows of patches it reads from a lazy array, temporaries (and the band being written
        when streaming).
    fill_value : scalar, optional
        Value of pixels no (kept part of a) patch samples: strides larger than the kernel, dropped
        patches, crop, or only zero weights. Default: the source's nodata (``_FillValue``/``nodata``
        attrs), else NaN for floats, 0 for integers and bool. Not for ``"sum"``: there such pixels
        are 0, as in a gradient (a ``fill_value`` other than 0 is refused).

    Returns
    -------
    DataArray, ndarray or Path
        For a DataArray: dims ``(*leading, *channels, y, x)`` on the source grid, with its 1-D ``y``
        and ``x`` (rows no patch samples extrapolated with the grid's step, else NaN), other
        coordinates, attrs (less ``patchkit_spec``) and CRS; ``.rio.transform()`` is the source's.
        For an array: ``[batch, h, w, C]``. With ``out``: the path written. The dtype is the
        patches'; where patches agree (as after extraction) values come back bit for bit (but for
        ``"sum"``). ``"sum"`` adds floats in float64 (complex128) and integers and bool in int64
        (exact; wrapping like numpy's integer addition where the dtype cannot hold the sum; bool
        gives "any"), then casts.

    Raises
    ------
    PatchkitValueError
        Patches not made by patchkit without ``spec``/``image_shape``; a shape that does not match
        the spec; a bad ``blend``, ``crop``, ``fill_value`` or ``out``.
    BudgetTooSmallError
        ``max_memory`` below what one output row needs (the message names the minimum).
    OutputTooLargeError
        An in-memory result larger than the memory available (use ``out``).

    Examples
    --------
    >>> patches = da.patches.extract(256, 128, padding="SAME")  # doctest: +SKIP
    >>> stitch(model(patches), blend="cosine", crop=16)  # doctest: +SKIP

    A Tukey window weighs each patch's border down to 0: pixels only such zero weights reach (here
    the image's border, which only the patches' outer taps sample) get ``fill_value``:

    >>> import numpy as np
    >>> from patchkit import PatchSpec, extract_patches
    >>> image, spec = np.arange(36.0).reshape(1, 6, 6, 1), PatchSpec(4, 2)
    >>> back = stitch(extract_patches(image, 4, 2), blend=("tukey", 0.5), spec=spec, image_shape=(6, 6),
    ...               fill_value=-1)
    >>> back[0, :, :, 0]
    array([[-1., -1., -1., -1., -1., -1.],
           [-1.,  7.,  8.,  9., 10., -1.],
           [-1., 13., 14., 15., 16., -1.],
           [-1., 19., 20., 21., 22., -1.],
           [-1., 25., 26., 27., 28., -1.],
           [-1., -1., -1., -1., -1., -1.]])

    ``"sum"`` is the gradient of extraction: stitching patches of ones counts the patches that
    sample each pixel.

    >>> stitch(extract_patches(np.ones((1, 6, 6, 1)), 4, 2), "sum", spec=spec, image_shape=(6, 6))[0, :, :, 0]
    array([[1., 1., 2., 2., 1., 1.],
           [1., 1., 2., 2., 1., 1.],
           [2., 2., 4., 4., 2., 2.],
           [2., 2., 4., 4., 2., 2.],
           [1., 1., 2., 2., 1., 1.],
           [1., 1., 2., 2., 1., 1.]])
    """
    labelled = is_labelled(patches)
    path, budget = out_path(out), Budget.of(max_memory)
    spec, shape, batch_channels = resolve_geometry(patches, spec, image_shape, labelled)
    spec.check(shape)
    crop = normalize_crop(crop, spec.sizes)
    dims, reader = reader_for(patches, spec, shape, batch_channels, labelled)  # patches match the spec: weights fit
    lines = lines_of(spec, shape, crop)
    lines, weights = support(lines, blend_weights(blend, (lines[0].kept, lines[1].kept)))
    job = make_job(blend, lines, reader, weights, fill_value, patches if labelled else None, sink_class(path).copies)
    shape4 = (reader.n, shape[0], shape[1], reader.m)
    check_room(path, math.prod(shape4) * reader.dtype.itemsize)
    rows = band_height(job, budget)
    labels = Labels(patches, dims, spec, shape, reader) if labelled else None
    with sink_for(path, job, rows, shape4, labels) as sink:
        run(job, sink, sink.rows)
    return result(sink, labels)
