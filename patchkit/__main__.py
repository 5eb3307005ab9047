"""``python -m patchkit``: the ``patchkit`` command (:func:`patchkit.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
