"""One module per method; each has ``run(job, context) -> dict`` (``context`` from its optional untimed
``setup(job)``) and writes its mosaic under ``job.out``."""

METHODS = ("engine", "dagster", "dagster_postgres", "engine_pipeline", "gdal", "odc_stac", "floor")
