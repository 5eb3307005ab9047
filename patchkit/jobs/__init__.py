"""Jobs around the library: the papermill templates (``templates``) and the ``patchkit`` command (``cli``).

The command only parses and delegates (to the accessor, the sinks' registry and the templates);
nothing in patchkit imports this package.
"""
