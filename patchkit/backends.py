"""The backend family, as users and plugin authors see it: :func:`available`, :func:`register`, :class:`Backend`.

``backend="auto"`` picks numpy or TensorFlow by measurement (:func:`calibrate`); a package adds a
backend through the ``patchkit.backends`` entry-point group (see :class:`Backend` for the interface).
The implementations live in :mod:`patchkit.core.backends`.
"""

from .core.backends import Backend, auto_choices, available, calibrate, get_backend, register

__all__ = ["Backend", "available", "register", "get_backend", "calibrate", "auto_choices"]
