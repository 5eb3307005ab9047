"""One spatial axis, by TensorFlow's rules: kernel extent, output size, padding, and the :class:`Axis` they make."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import KernelTooLargeError

__all__ = ["Axis", "effective_size", "output_size", "padding_amounts", "tf_output_size"]


def effective_size(k: int, r: int) -> int:
    """Extent of a kernel of ``k`` taps spaced ``r`` apart: ``k + (k - 1)(r - 1)``."""
    return k + (k - 1) * (r - 1)


def output_size(n: int, k: int, s: int, r: int, padding: str) -> int:
    """Number of patches along an axis of length ``n`` (TensorFlow's rule; see the module docstring).

    Under ``VALID`` the result is 0 when the effective kernel is larger than ``n``; callers that need a
    non-empty grid check :meth:`PatchSpec.check` first.
    """
    if padding == "SAME":
        return -(-n // s)
    return max(-(-(n - effective_size(k, r) + 1) // s), 0)


def padding_amounts(n: int, k: int, s: int, r: int, padding: str) -> tuple[int, int]:
    """Zeros added ``(before, after)`` along an axis: ``total // 2`` before, the remainder after."""
    if padding == "VALID":
        return (0, 0)
    total = max((output_size(n, k, s, r, padding) - 1) * s + effective_size(k, r) - n, 0)
    return (total // 2, total - total // 2)


def tf_output_size(n: int, k: int, s: int, r: int, padding: str, axis: str = "height") -> int:
    """TensorFlow's own count of patches along an axis, empty axes and images included.

    Equal to :func:`output_size` wherever the grid is not empty. TensorFlow computes a ``VALID`` count
    as ``(n - ke + s) / s`` in C++ (truncated towards zero): a kernel larger than the axis by less than
    two strides gives 0 patches, and TensorFlow refuses anything larger ("Computed output size would be
    negative"), as this does with :class:`KernelTooLargeError`.
    """
    if padding == "SAME":
        return -(-n // s)
    ke = effective_size(k, r)
    if n - ke + s <= -s:
        extent = f"{k}" if r == 1 else f"{k} at rate {r}"
        raise KernelTooLargeError(
            f"kernel {extent} (effective {ke}) is larger than the image {axis} {n} by two strides ({s}) or more "
            "with padding='VALID' (tf.image.extract_patches refuses it too); use padding='SAME' or a smaller "
            "kernel or rate"
        )
    return max(n - ke + s, 0) // s


@dataclass(frozen=True, slots=True)
class Axis:
    """The geometry of one spatial axis, derived once from the spec and the axis length."""

    n: int
    k: int
    s: int
    r: int
    out: int
    before: int

    @property
    def ke(self) -> int:
        return effective_size(self.k, self.r)

    def span(self, i0: int, i1: int) -> tuple[int, int]:
        """Input positions ``[start, stop)`` that output positions ``[i0, i1)`` read (unclipped)."""
        return (i0 * self.s - self.before, (i1 - 1) * self.s - self.before + self.ke)

    def interior(self) -> tuple[int, int]:
        """Output positions ``[lo, hi)`` whose windows lie wholly inside the input (no padding)."""
        lo = min(-(-self.before // self.s), self.out)
        hi = (self.n + self.before - self.ke) // self.s + 1 if self.n + self.before >= self.ke else 0
        return lo, min(max(hi, lo), self.out)
