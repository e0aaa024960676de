"""Dagster resources: where the STAC API is (and its token), and where the data lives."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pystac_client import Client

from mosaic_assets.engine.catalog import open_client
from mosaic_assets.engine.layout import MosaicLayout
from mosaic_assets.engine.spec import MosaicSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_ENV = "MOSAIC_DATA_DIR"
STAC_URL_ENV = "MOSAIC_STAC_API_URL"
STAC_TOKEN_ENV = "STAC_API_TOKEN"


class StacApiResource(dg.ConfigurableResource):
    """The STAC API. ``url`` overrides the spec's URL (tests, other deployments); ``token`` is a
    secret and comes from the environment (``EnvVar``), never from config files."""

    url: str | None = None
    token: str | None = None

    def client(self, spec: MosaicSpec) -> Client:
        return open_client(self.url or spec.stac.url, self.token)


class DataRootResource(dg.ConfigurableResource):
    """Root folder for scene tables, GTI indexes and (unless a spec names its store) Zarr stores."""

    path: str

    def layout(self, spec: MosaicSpec) -> MosaicLayout:
        return MosaicLayout(spec, self.path)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment, with the embedded demo's defaults."""
    token = dg.EnvVar(STAC_TOKEN_ENV) if os.environ.get(STAC_TOKEN_ENV) else None
    return {
        "stac_api": StacApiResource(url=os.environ.get(STAC_URL_ENV) or None, token=token),
        "data_root": DataRootResource(path=os.environ.get(DATA_DIR_ENV) or str(REPO_ROOT / ".local" / "data")),
    }
