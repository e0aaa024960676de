"""Synthetic but realistic scenes: multi-band uint16 COGs in two UTM zones, plus their STAC items.

Why synthetic: the demo and the tests must run offline. What makes them realistic enough to catch
real bugs: textured content at every scale (a nearest-neighbour pick one pixel off shows up), a
scene-specific offset (a wrong best-on-top order shows up), nodata borders around a tilted
acquisition footprint (a mask bug shows up), DEFLATE COGs with 512 blocks and overviews, scenes
in two UTM zones (reprojection), overlapping footprints and varying ``eo:cloud_cover``.

With ``clouds`` (the demo's scenes): bright cloud blobs with their shadows cast beside them, and a
Sentinel-2 SCL-like class asset ``scl`` at half the resolution (20 m under 10 m bands: 0 nodata,
3 cloud shadow, 4 vegetation, 5 not vegetated, 8/9 cloud medium/high probability), so a masked median
has something to remove; ``eo:cloud_cover`` is then the scene's real cloud percentage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from odc.geo import geom
from rasterio.io import MemoryFile

BAND_NAMES = ("blue", "green", "red", "nir")
NODATA = 0
ASSET_KEY = "data"
FOOTPRINT_POINTS_PER_EDGE = 16
GENERATOR_VERSION = 2  # bumped when the same config makes other scenes or items (benchmark caches key on it)


@dataclass(frozen=True)
class SceneSetConfig:
    """Size and layout of a synthetic scene set."""

    collection: str = "demo-scenes"
    center_lon: float = 12.0  # on the UTM 32/33 border, so scenes fall in both zones
    center_lat: float = 47.1
    dates: tuple[date, ...] = (date(2024, 6, 1), date(2024, 6, 2), date(2024, 6, 4), date(2024, 6, 7))
    scenes_per_date: int = 6
    scene_size: int = 2048  # pixels per side
    resolution: float = 10.0
    spread_m: float = 8_000.0  # how far scene centres scatter from the centre
    utm_zones: tuple[int, ...] = (32, 33)  # scene k is in UTM zone utm_zones[k % len]: reprojection unless (32,)
    seed: int = 42
    clouds: bool = False  # clouds, shadows and an SCL-like class asset (see the module docstring)


@dataclass(frozen=True)
class Scene:
    item_id: str
    path: Path
    epsg: int
    transform: Affine
    shape: tuple[int, int]
    acquired: datetime
    cloud_cover: float
    footprint: geom.Geometry  # valid-data polygon, EPSG:4326
    scl_path: Path | None = None  # the class asset at twice the pixel size (``SceneSetConfig.clouds``)


def _field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-scale noise with a 1/f spectrum, like terrain and land cover; zero mean, unit variance."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size) ** 1.6
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * falloff, s=(size, size))
    return (field - field.mean()) / field.std()


# How brightness and vegetation show in blue, green, red, nir: vegetation is dark in red, bright in nir.
_BRIGHTNESS = (500, 600, 700, 800)
_VEGETATION = (-150, 100, -450, 900)


def _texture(rng: np.random.Generator, size: int, bands: int) -> np.ndarray:
    """Band-correlated textured content in a plausible reflectance range, with per-pixel grain."""
    brightness, vegetation = _field(rng, size), _field(rng, size)
    out = np.empty((bands, size, size), dtype=np.float64)
    for b in range(bands):
        grain = rng.standard_normal((size, size))
        out[b] = 1500 + 300 * b + _BRIGHTNESS[b % 4] * brightness + _VEGETATION[b % 4] * vegetation + 120 * grain
    return out


def _valid_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A tilted quadrilateral of valid pixels (an acquisition swath), nodata outside; also its corners."""
    inset = size * rng.uniform(0.04, 0.12, size=4)
    corners = np.array(
        [
            [inset[0], 0.0 + inset[1] * 0.3],
            [size - inset[1] * 0.3, inset[1]],
            [size - inset[2], size - inset[2] * 0.3],
            [inset[3] * 0.3, size - inset[3]],
        ]
    )
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = np.ones((size, size), dtype=bool)
    for i in range(4):
        (x0, y0), (x1, y1) = corners[i], corners[(i + 1) % 4]
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside, corners


SCL_ASSET = "scl"
SHADOW, VEGETATION, NOT_VEGETATED, CLOUD_MEDIUM, CLOUD_HIGH = 3, 4, 5, 8, 9


def _clouds(rng: np.random.Generator, size: int, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity (0..1) of a few soft blobs, and the shadow they cast (the blobs shifted ~1 km)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    opacity = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(0, 5))):
        cy, cx = rng.uniform(0, size, size=2)
        radius = rng.uniform(0.04, 0.12) * size
        opacity = np.maximum(opacity, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))))
    opacity = np.where(opacity > 0.25, opacity, 0)
    dy, dx = (np.array([0.6, 0.8]) * 1000 / resolution).astype(int)
    shadow = np.zeros((size, size), dtype=bool)
    shadow[dy:, dx:] = opacity[:-dy, :-dx] > 0
    return opacity, shadow & (opacity == 0)


def _with_clouds(pixels: np.ndarray, opacity: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Clouds brighten every band towards ~8000, shadows darken them to 40 %."""
    out = pixels.astype(np.float32)
    out = out * (1 - opacity) + 8000 * opacity
    out[:, shadow] *= 0.4
    return np.clip(np.rint(out), 1, 65535).astype("uint16")


def _classes(pixels: np.ndarray, inside: np.ndarray, opacity: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """SCL-like classes at the scene's resolution: vegetation where nir > red, clouds by opacity."""
    red, nir = pixels[2].astype(np.int32), pixels[3].astype(np.int32)
    classes = np.where(nir > red, VEGETATION, NOT_VEGETATED).astype("uint8")
    classes[shadow] = SHADOW
    classes[opacity > 0] = CLOUD_MEDIUM
    classes[opacity > 0.6] = CLOUD_HIGH
    classes[~inside] = NODATA
    return classes


def _write_cog(path: Path, data: np.ndarray, epsg: int, transform: Affine, names: tuple[str, ...] = BAND_NAMES) -> None:
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=str(data.dtype),
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=NODATA,
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data)
            for b, name in enumerate(names[: data.shape[0]], start=1):
                tmp.set_band_description(b, name)
        with mem.open() as src:
            rasterio.shutil.copy(
                src,
                str(path),
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=512,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING="AVERAGE" if data.dtype != np.uint8 else "NEAREST",
                PREDICTOR=2,
            )


def generate_scenes(out_dir: Path, config: SceneSetConfig = SceneSetConfig()) -> list[Scene]:
    """Write the COGs into ``out_dir`` and describe them; deterministic for a given config."""
    import rasterio.shutil  # noqa: F401  (registers rasterio.shutil for _write_cog)

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    centre = geom.point(config.center_lon, config.center_lat, "EPSG:4326")
    scenes: list[Scene] = []
    for day_index, day in enumerate(config.dates):
        for k in range(config.scenes_per_date):
            epsg = 32600 + config.utm_zones[k % len(config.utm_zones)]
            cx, cy = centre.to_crs(f"EPSG:{epsg}").coords[0]
            dx, dy = rng.uniform(-config.spread_m, config.spread_m, size=2)
            half = config.scene_size * config.resolution / 2
            x0 = round((cx + dx - half) / config.resolution) * config.resolution
            y0 = round((cy + dy + half) / config.resolution) * config.resolution
            transform = Affine(config.resolution, 0, x0, 0, -config.resolution, y0)
            data = _texture(rng, config.scene_size, len(BAND_NAMES))
            data += 37 * (day_index * config.scenes_per_date + k)  # scene-specific offset
            inside, corners = _valid_mask(rng, config.scene_size)
            pixels = np.clip(np.rint(data), 1, 65535).astype("uint16")
            item_id = f"demo-{day:%Y%m%d}-{k:02d}-utm{epsg % 100}"
            path = out_dir / f"{item_id}.tif"
            scl_path, cloud_cover = None, round(float(rng.uniform(0, 60)), 2)
            if config.clouds:  # its own generator: the scenes' other pixels stay those of clouds: false
                opacity, shadow = _clouds(
                    np.random.default_rng([config.seed, day_index, k]), config.scene_size, config.resolution
                )
                pixels = _with_clouds(pixels, opacity, shadow)
                classes = _classes(pixels, inside, opacity, shadow)[::2, ::2]  # the 20 m pixel's top-left 10 m class
                scl_path = (out_dir / f"{item_id}_scl.tif").resolve()
                _write_cog(scl_path, classes[np.newaxis], epsg, transform * Affine.scale(2), names=("scl",))
                cloud_cover = round(float((opacity[inside] > 0).mean() * 100), 2)
            pixels[:, ~inside] = NODATA
            _write_cog(path, pixels, epsg, transform)
            world = [transform * (float(x), float(y)) for x, y in corners]
            # ~16 points per edge, like real catalogs' footprints (Earth Search's Sentinel-2: tens of
            # vertices); densified to the pixel, 7,500 vertices made the STAC API ~50x slower.
            footprint = geom.polygon(world + [world[0]], f"EPSG:{epsg}").to_crs(
                "EPSG:4326", resolution=config.scene_size * config.resolution / FOOTPRINT_POINTS_PER_EDGE
            )
            acquired = datetime(day.year, day.month, day.day, 10, 30, 0, tzinfo=UTC) + timedelta(seconds=k)
            scenes.append(
                Scene(
                    item_id,
                    path.resolve(),
                    epsg,
                    transform,
                    (config.scene_size, config.scene_size),
                    acquired,
                    cloud_cover,
                    footprint,
                    scl_path,
                )
            )
    return scenes


def scene_item(scene: Scene, collection: str, updated: datetime) -> dict:
    """The STAC item of a scene, with the projection and eo extensions filled in."""
    t = scene.transform
    bounds = scene.footprint.boundingbox
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": scene.item_id,
        "collection": collection,
        "geometry": json.loads(json.dumps(scene.footprint.json)),
        "bbox": [bounds.left, bounds.bottom, bounds.right, bounds.top],
        "properties": {
            "datetime": scene.acquired.isoformat().replace("+00:00", "Z"),
            "updated": updated.isoformat().replace("+00:00", "Z"),
            "eo:cloud_cover": scene.cloud_cover,
            "proj:code": f"EPSG:{scene.epsg}",
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "proj:shape": list(scene.shape),
        },
        "assets": {
            ASSET_KEY: {
                "href": str(scene.path),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "eo:bands": [{"name": n} for n in BAND_NAMES],
            }
        },
        "links": [],
    }
    if scene.scl_path is not None:  # a 20 m asset of its own grid, as Sentinel-2's SCL
        coarse = t * Affine.scale(2)
        item["assets"][SCL_ASSET] = {
            "href": str(scene.scl_path),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:shape": [scene.shape[0] // 2, scene.shape[1] // 2],
            "proj:transform": [coarse.a, coarse.b, coarse.c, coarse.d, coarse.e, coarse.f],
            "raster:bands": [{"nodata": NODATA, "data_type": "uint8"}],
        }
    return item


def collection_document(collection: str, items: list[dict]) -> dict:
    """A STAC collection whose extent covers the items."""
    boxes = np.array([i["bbox"] for i in items] or [[-180.0, -90.0, 180.0, 90.0]], dtype=float)
    times = sorted(i["properties"]["datetime"] for i in items) or [None]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection,
        "description": "Synthetic multi-band uint16 COGs for the mosaic_assets demo and tests",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        float(boxes[:, 0].min()),
                        float(boxes[:, 1].min()),
                        float(boxes[:, 2].max()),
                        float(boxes[:, 3].max()),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }
