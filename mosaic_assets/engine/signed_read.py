"""Reading scenes whose hrefs need a fresh signature (``stac.modifier``, e.g. Planetary Computer's SAS tokens).

Why sign in the writer: tokens expire within the hour and a backfill may run days after its catalog
step, so the scene table and the GTI on disk hold the catalog's unsigned hrefs, and each writer signs
the block's scenes just before it reads them. The signed names live only in this process's memory: a
GTI of the block's scenes whose index is a GeoJSON document in GDAL's ``/vsimem/`` (a GeoPackage would
have to be a file), closed after the read. Nothing signed is written to disk, metadata or logs;
messages that could quote a signed URL go through ``modifier.redact_text``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rasterio
import shapely
from rasterio.io import MemoryFile

from .bandgroups import ReadGroup
from .catalog import MISSING, CatalogError, HrefPolicy, gdal_path
from .grid import MosaicGrid
from .gti import INDEX_LAYER, SORT_FIELD, gti_xml, scene_location
from .modifier import ModifierError, load_modifier, redact_text, signed_hrefs
from .spec import MosaicSpec


class SignError(RuntimeError):
    """``stac.modifier`` failed in a writer; the message names the key or the item."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


@functools.cache
def _modifier(value: str) -> Callable:
    return load_modifier(value)


def sign_scenes(spec: MosaicSpec, scenes: list[dict]) -> list[dict]:
    """The block's scenes, each with ``signed``: asset key -> the GDAL path of its freshly signed href
    (checked by the same href policy as the catalog's)."""
    policy = HrefPolicy.for_spec(spec)
    out = []
    for scene in scenes:
        present = {key: asset for key, asset in scene["assets"].items() if MISSING not in asset}
        unsigned = {key: asset.get("stac_href") or asset["href"] for key, asset in present.items()}
        try:
            signed = signed_hrefs(_modifier(spec.stac.modifier), scene["item_id"], scene.get("collection"), unsigned)
        except ModifierError as exc:  # a signing service that is down may come back: retry; a bad spec may not
            raise SignError(str(exc), transient=exc.item_id is not None) from None
        try:
            paths = {key: gdal_path(signed[key], scene["item_id"], policy) for key in unsigned}
        except CatalogError as exc:  # its message quotes the signed href
            raise SignError(redact_text(str(exc), signed.values()), transient=False) from None
        out.append({**scene, "signed": paths})
    return out


@contextmanager
def signed_gti(spec: MosaicSpec, grid: MosaicGrid, group: ReadGroup, scenes: list[dict]) -> Iterator:
    """An open GTI over just ``scenes`` (read with geometry and z-order), their assets at signed paths."""
    features = [
        {
            "type": "Feature",
            "properties": {
                group.location_field: scene_location(spec, group, s["assets"], s["signed"]),
                SORT_FIELD: int(s[SORT_FIELD]),
            },
            "geometry": shapely.geometry.mapping(s["geometry"]),
        }
        for s in scenes
    ]
    document = {"type": "FeatureCollection", "name": INDEX_LAYER, "features": features}
    with MemoryFile(json.dumps(document).encode(), filename=f"{INDEX_LAYER}.geojson") as index:
        with rasterio.open(gti_xml(spec, grid, index.name, group)) as dataset:
            yield dataset
