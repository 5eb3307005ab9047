"""``python -m patchkit``: the ``patchkit`` command (:func:`patchkit.jobs.cli.main`)."""

import sys

from .jobs.cli import main

sys.exit(main())
