"""Benchmark harness: our engine and Dagster path against GDAL alone, odc-stac and the floor (see README.md)."""
