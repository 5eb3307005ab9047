"""The xarray face: the thin ``.patches`` accessor and what it stands on.

``accessor`` (registration and one-to-three-line methods), ``dims`` (which dims are spatial, channel,
leading; arranging data for the backends and back), ``labels`` (every patch pixel's coordinates, the
recorded spec), ``geo`` (transforms, CRS, bounds, the grid table), ``nodata`` (nodata shares),
``layout`` (prepare, the one streamed row-band plan, labelled bands: what the accessor and every sink
use) and ``tfdata`` (``to_tf_dataset``: patches into ``tf.data``).
"""
