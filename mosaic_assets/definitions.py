"""Dagster entry point: one asset graph per mosaic declared in the spec file.

The spec file is ``$MOSAIC_SPECS`` (default: the embedded demo, ``specs/demo.yaml``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dagster as dg

from mosaic_assets.defs.checks import build_mosaic_checks
from mosaic_assets.defs.execution import executor_for
from mosaic_assets.defs.mosaic import build_cube_assets, build_mosaic_assets
from mosaic_assets.defs.resources import REPO_ROOT, STAC_TOKEN_ENV, STAC_URL_ENV, default_resources
from mosaic_assets.defs.schedules import build_repair_schedule
from mosaic_assets.defs.sensors import build_stac_sensor, sensor_default_status
from mosaic_assets.engine.anchor import resolve_native
from mosaic_assets.engine.catalog import open_client
from mosaic_assets.engine.gdal_env import require_gti_driver
from mosaic_assets.engine.spec import CubeSpec, MosaicSpec, load_specs

SPECS_ENV = "MOSAIC_SPECS"

# We use MultiToSingleDimensionPartitionMapping knowingly (time x block -> time); say it once, here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def spec_path() -> Path:
    return Path(os.environ.get(SPECS_ENV) or REPO_ROOT / "specs" / "demo.yaml")


def _stac_client(spec):
    """The STAC API the stac_api resource reaches (its URL and token), opened before resources exist."""
    return open_client(os.environ.get(STAC_URL_ENV) or spec.stac.url, os.environ.get(STAC_TOKEN_ENV) or None)


def mosaic_specs(path: Path | None = None, resources: dict | None = None) -> list[MosaicSpec | CubeSpec]:
    """The spec file's mosaics as everything downstream sees them: ``anchor: native`` resolved into a
    concrete fraction, once (cached under the data root); other specs are returned as loaded, no I/O."""
    data_root = (resources or default_resources())["data_root"].path
    return [
        resolve_native(s, data_root, _stac_client) if s.anchor == "native" else s
        for s in load_specs(path or spec_path())
    ]


def build_definitions(path: Path | None = None) -> dg.Definitions:
    require_gti_driver()
    resources = default_resources()
    specs = mosaic_specs(path, resources)
    assets, checks, sensors, schedules = [], [], [], []
    for spec in specs:
        if isinstance(spec, CubeSpec):  # one sensor and repair schedule per source
            _, sources, cube_assets = build_cube_assets(spec)
            assets += cube_assets
            for i, mosaic in enumerate(sources):
                checks += build_mosaic_checks(mosaic, store_spec=spec, template_check=i == 0)
                sensors.append(build_stac_sensor(mosaic))
                schedules.append(build_repair_schedule(mosaic))
            continue
        mosaic, mosaic_assets = build_mosaic_assets(spec)
        assets += mosaic_assets
        checks += build_mosaic_checks(mosaic)
        sensors.append(build_stac_sensor(mosaic))
        schedules.append(build_repair_schedule(mosaic))
    automation = dg.AutomationConditionSensorDefinition(
        "mosaic_automation",
        target=dg.AssetSelection.all(),
        default_status=sensor_default_status(),
        minimum_interval_seconds=15,
        description="Evaluates the eager conditions (GTI after catalog, preview after chunks)",
    )
    return dg.Definitions(
        # checks ride in ``assets`` so every materialize(defs.assets, ...) (run.py build, tests) runs them too
        assets=[*assets, *checks],
        sensors=[*sensors, automation],
        schedules=schedules,
        resources=resources,
        executor=executor_for(),
    )


defs = build_definitions()
