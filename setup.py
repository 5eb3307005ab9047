"""Build the optional C copy kernel; everything else is in pyproject.toml.

The extension is optional: where no C compiler is available the install goes on and patchkit
copies with numpy alone (slower on large streams, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("patchkit.core.backends._copy", sources=["patchkit/core/backends/_copy.c"], optional=True),
    ]
)
