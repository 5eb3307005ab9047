"""Where patches go: Zarr stores, GeoTIFF chips, TFRecord shards and ``tf.data``, all resumable.

Every sink streams row bands of patches (``.patches.iter``) under ``max_memory``, records what it has
finished as it goes, and marks its output complete last, so a run killed at any point and run again
with the same arguments finishes the work and no output reads as complete before it is. Heavy
packages (zarr, rasterio, TensorFlow) are imported by the sink that needs them.
"""
