"""Packaging that pyproject.toml cannot say: the package list with the templates mapped in, and the C kernel.

- ``templates/`` (beside ``patchkit/``, the notebooks' source of truth) is shipped as the package
  ``patchkit.templates``: the wheel carries ``patchkit/templates/*.ipynb``; a checkout or an editable
  install reads them in place. :func:`patchkit.jobs.templates.template_folder` finds them either way.
- The C kernels are optional: where no C compiler is available the install goes on and patchkit
  copies and stitches with numpy alone (slower, same results): ``_copy`` (patch copies) and the
  stitching kernel ``patchkit/stitch/_kernel.c``.
"""

from setuptools import Extension, find_packages, setup

setup(
    packages=find_packages(include=["patchkit", "patchkit.*"]) + ["patchkit.templates"],
    package_dir={"patchkit.templates": "templates"},
    package_data={"patchkit.templates": ["*.ipynb"]},
    ext_modules=[
        Extension("patchkit.core.backends._copy", sources=["patchkit/core/backends/_copy.c"], optional=True),
        Extension("patchkit.stitch._kernel", sources=["patchkit/stitch/_kernel.c"], optional=True),
    ],
)
