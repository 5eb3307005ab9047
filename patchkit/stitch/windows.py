"""Blend windows: how much each tap of a patch counts where patches overlap, and the crop that drops taps.

:data:`WINDOWS` is the registry of named windows (``name -> window(k)``, ``k`` taps along one axis); a
patch's weights are the outer product of its rows' and columns' windows. A new window is one function
and one entry (:func:`register_window`). Besides the registry, any ``scipy.signal.windows`` name and any
callable ``(kh, kw) -> weights`` are blends; :func:`blend_weights` turns a blend into checked weights.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MissingDependencyError, PatchkitTypeError, PatchkitValueError, shown

__all__ = ["WINDOWS", "BLENDS", "register_window", "blend_weights", "normalize_crop", "gaussian", "SIGMA_SCALE",
           "GAUSSIAN_FLOOR"]

#: Weights of a scipy window this far below zero, relative to its largest, are round-off of a zero.
_ROUND_OFF = 1e-12


def _cosine(k: int) -> np.ndarray:
    """``sin^2(pi (i + 0.5) / k)``: smooth, symmetric, largest in the middle, never zero."""
    return np.sin(np.pi * (np.arange(k) + 0.5) / k) ** 2


def _ones(k: int) -> np.ndarray:
    """Every tap weighs 1."""
    return np.ones(k)


#: The ``sigma_scale`` of ``blend="gaussian"`` (MONAI's default): sigma is this share of the patch's size, per axis.
SIGMA_SCALE = 0.125
#: The least weight of the Gaussian blend, as MONAI clamps its importance map away from 0 (its peak is 1).
GAUSSIAN_FLOOR = 1e-3


def gaussian(sigma_scale: float | tuple[float, float] = SIGMA_SCALE) -> Callable[[int, int], np.ndarray]:
    """The Gaussian importance map of MONAI's ``sliding_window_inference(mode="gaussian")`` as a blend.

    ``blend=gaussian(s)`` weighs tap ``i`` of ``k`` along an axis by ``exp(-(i - (k - 1) / 2)^2 / (2 sigma^2))``
    with ``sigma = s * k`` (``s`` one number, or one per axis), the outer product of the two axes, then
    every weight below :data:`GAUSSIAN_FLOOR` raised to it: the centre of a patch counts most, and no
    pixel a patch covers is left without weight. ``blend="gaussian"`` is ``gaussian(SIGMA_SCALE)``.

    Raises
    ------
    PatchkitValueError
        When ``sigma_scale`` is not a positive finite number (or a pair of them).
    """
    scales = sigma_scale if isinstance(sigma_scale, (tuple, list)) else (sigma_scale, sigma_scale)
    if len(scales) != 2 or not all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
                                   and np.isfinite(v) and v > 0 for v in scales):
        raise PatchkitValueError(
            f"sigma_scale={shown(sigma_scale)} must be a positive number, or a (rows, cols) pair of them: sigma is "
            f"sigma_scale times the patch size (MONAI's default {SIGMA_SCALE}); pass e.g. gaussian(0.25)"
        )

    def weights(kh: int, kw: int) -> np.ndarray:
        axes = []
        for k, scale in zip((kh, kw), scales):
            x = np.arange(k) - (k - 1) / 2.0
            axes.append(np.exp(x ** 2 / (-2.0 * (float(scale) * k) ** 2)))
        return np.maximum(np.outer(*axes), GAUSSIAN_FLOOR)

    weights.__name__ = f"gaussian({sigma_scale!r})"
    return weights


#: The blend windows by name: ``name -> window(k)``, ``k`` taps along one axis; a patch's weights are
#: the outer product of its rows' and columns' windows. A new window is one function and one entry
#: (:func:`register_window`). ``"sum"`` is not a mean (TensorFlow's fold); ``"none"`` is the last write.
WINDOWS: dict[str, Callable[[int], np.ndarray]] = {"mean": _ones, "sum": _ones, "cosine": _cosine}
#: The blends patchkit names itself; registered windows, any ``scipy.signal.windows`` name or a callable also work.
BLENDS = (*WINDOWS, "gaussian", "none")


def _choices() -> tuple[str, ...]:
    """The blend names there are now (registered windows included), for messages."""
    return (*WINDOWS, "gaussian", "none")


def register_window(name: str, window: Callable[[int], Any]) -> None:
    """Make ``blend=name`` the weighted mean under ``window`` (``k -> k`` weights, finite, at least 0).

    Raises
    ------
    PatchkitValueError
        When ``name`` is taken (by patchkit's own blends) or ``window`` is not callable.
    """
    if not isinstance(name, str) or name.lower() in BLENDS or not callable(window):
        raise PatchkitValueError(
            f"register_window({shown(name)}, {shown(window)}) needs a new name (not one of patchkit's own blends) "
            "and a callable k -> k weights; pass e.g. register_window('triangle', lambda k: 1 + np.minimum(np.arange(k), np.arange(k)[::-1]))"
        )
    WINDOWS[name.lower()] = window


def _scipy_window(blend, k: int) -> np.ndarray:
    """``scipy.signal.windows.get_window(blend, k, fftbins=False)``, with patchkit's errors.

    Round-off below zero at a window's zero ends (``"blackman"`` has ``-1.4e-17`` there) is set to
    0: weights within :data:`_ROUND_OFF` of the largest below zero count as the zeros they stand for.
    """
    try:
        from scipy.signal.windows import get_window
    except ImportError as err:
        raise MissingDependencyError(
            f"blend={shown(blend)} is a scipy.signal.windows name, which needs scipy; install it with "
            "`pip install scipy`, or use blend='cosine' or 'mean'"
        ) from err
    try:
        window = np.asarray(get_window(blend, k, fftbins=False), np.float64)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as err:
        raise PatchkitValueError(
            f"blend={shown(blend)} is not a blend patchkit knows ({type(err).__name__}: {shown(err, 200)}); use one of {_choices()}, a "
            "scipy.signal.windows name such as 'hamming' or ('tukey', 0.5), or a callable "
            "(kh, kw) -> weights of shape (kh, kw)"
        ) from None
    if window.size and np.isfinite(window).all():
        window[(window < 0) & (window >= -_ROUND_OFF * np.abs(window).max())] = 0.0
    return window


def _check_weights(weights: Any, blend, shape: tuple[int, int]) -> np.ndarray:
    """``weights`` as float64 of ``shape``, finite, at least 0 and not all 0, or a patchkit error naming ``blend``."""
    try:
        weights = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PatchkitTypeError(f"blend={shown(blend)} returned {type(weights).__name__}, not an array of weights: {err}") from None
    if weights.shape != shape:
        raise PatchkitValueError(
            f"blend={shown(blend)} gave weights of shape {weights.shape}, but the patches (after crop) are "
            f"{shape}; a callable blend is called as blend(kh, kw) and must return an array of shape (kh, kw)"
        )
    good = np.isfinite(weights) & (weights >= 0)
    if not good.all():
        bad = weights[~good]
        raise PatchkitValueError(
            f"blend={shown(blend)} gives {bad.size} weights that are negative or not finite (e.g. {shown(bad.flat[0])}); "
            "every weight must be finite and at least 0 (zeros are fine: a pixel that only zero weights reach "
            "gets fill_value): clip them, e.g. lambda kh, kw: np.clip(my_weights(kh, kw), 0, None), or use "
            "blend='cosine' or a scipy.signal.windows name such as 'hann'"
        )
    if not weights.any():
        raise PatchkitValueError(
            f"blend={shown(blend)} gives only zero weights for patches of {shape[0]}x{shape[1]} pixels (after crop), "
            "so every pixel would be fill_value; use larger patches, a smaller crop, or blend='mean'"
        )
    return weights


def blend_weights(blend: str | tuple | Callable, shape: tuple[int, int]) -> np.ndarray | None:
    """The weight of every pixel of a (cropped) patch of ``shape`` under ``blend``; None for ``"none"``.

    Parameters
    ----------
    blend : str, tuple or callable
        ``"mean"`` and ``"sum"`` (all 1), ``"cosine"`` (patchkit's ``sin^2(pi (i + 0.5) / k)`` per
        axis, outer product: it hides seams and is never zero; note that scipy's own ``"cosine"``
        window is the square root of it), ``"gaussian"`` (MONAI's Gaussian importance map,
        :func:`gaussian`; ``gaussian(sigma_scale)`` for another sigma), ``"none"``, any ``scipy.signal.windows`` name or
        ``(name, parameter)`` tuple (separable outer product of ``get_window(name, k,
        fftbins=False)``; round-off below zero at zero ends, as in ``"blackman"``, is taken as 0),
        or a callable ``(kh, kw) -> array of shape (kh, kw)``.
    shape : (int, int)
        Rows and columns of the part of a patch that is blended (the patch minus ``crop``).

    Returns
    -------
    ndarray or None
        float64 ``shape``, every weight finite and at least 0, some above 0. Zeros are allowed
        (``"hann"``, ``"bartlett"``, ``("tukey", 0.5)`` end in them): a zero-weight tap adds
        nothing, so a pixel gets the weighted mean of its positive-weight taps, and a pixel that
        only zero-weight taps sample gets ``fill_value`` (as ``tiler``'s ``Merger`` leaves it).

    Raises
    ------
    PatchkitValueError
        Unknown names (the message lists the choices), weights of the wrong shape, weights that are
        negative or not finite, or weights that are all zero (``"hann"`` on two pixels).
    PatchkitTypeError
        ``blend`` is neither a string, a tuple nor a callable.
    """
    kh, kw = shape
    if isinstance(blend, str) and blend.lower() == "none":
        return None
    if isinstance(blend, str) and blend.lower() == "gaussian":
        return _check_weights(gaussian()(kh, kw), blend, shape)
    if isinstance(blend, str) and blend.lower() in WINDOWS:
        window = WINDOWS[blend.lower()]
        return _check_weights(np.outer(window(kh), window(kw)), blend, shape)
    if isinstance(blend, (str, tuple)):
        return _check_weights(np.outer(_scipy_window(blend, kh), _scipy_window(blend, kw)), blend, shape)
    if callable(blend):
        return _check_weights(blend(kh, kw), blend, shape)
    raise PatchkitTypeError(
        f"blend={shown(blend)} (a {type(blend).__name__}) is not a blend; use one of {_choices()}, a "
        "scipy.signal.windows name, or a callable (kh, kw) -> weights"
    )


def normalize_crop(crop: int | Sequence[int], sizes: tuple[int, int]) -> tuple[int, int]:
    """``crop`` as ``(rows, cols)`` dropped from each side of a patch; each must leave at least one tap.

    Raises
    ------
    PatchkitValueError
        A negative crop, one that is not an integer or a pair of them, or one that leaves nothing
        (``2 * crop >= kernel size``).
    """
    pair = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop) if isinstance(crop, Sequence) else None
    if pair is None or len(pair) != 2 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in pair):
        raise PatchkitValueError(f"crop={shown(crop)} must be an integer or a (rows, cols) pair of integers, e.g. crop=8")
    for c, k, axis in zip(pair, sizes, ("rows", "cols")):
        if c < 0 or 2 * c >= k:
            raise PatchkitValueError(
                f"crop={shown(crop)} drops {shown(c)} {axis} from each side of patches of {k} {axis}; it must be at least 0 "
                f"and leave at least one (at most {(k - 1) // 2})"
            )
    return int(pair[0]), int(pair[1])
