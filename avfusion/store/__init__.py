"""The feature store: Zarr groups of per-frame rows, written with commit and resume, read memory-mapped."""
