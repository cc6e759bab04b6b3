"""Scenes, tiles and the Zarr stores every stage reads and writes."""
