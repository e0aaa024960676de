"""A small RGB preview of one time step of the store, for people (PNG file, markdown metadata)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image

from .object_store import storage_options
from .store import VARIABLE


def preview_image(store: str, time_index: int, max_size: int = 1024) -> Image.Image:
    """Strided read (no full-resolution load), percentile stretch per band, nodata transparent."""
    ds = xr.open_zarr(store, mask_and_scale=False, consolidated=True, storage_options=storage_options(store))
    var = ds[VARIABLE]
    nodata = var.attrs.get("_FillValue", var.encoding.get("_FillValue", 0))
    bands = [str(b) for b in ds["band"].values]
    rgb = [bands.index(b) for b in ("red", "green", "blue") if b in bands] or list(range(min(3, len(bands))))
    rgb = (rgb * 3)[:3] if len(rgb) < 3 else rgb
    step = max(1, int(np.ceil(max(var.shape[2:]) / max_size)))
    data = var.isel(time=time_index, band=rgb, y=slice(None, None, step), x=slice(None, None, step)).values
    # NaN is the nodata of ``values: physical`` (and ``data != nan`` holds everywhere)
    valid = ~np.all(np.isnan(data), axis=0) if np.isnan(nodata) else np.any(data != nodata, axis=0)
    out = np.zeros((*valid.shape, 4), dtype=np.uint8)
    for i in range(3):
        band = data[i].astype(np.float64)
        if valid.any() and not np.isnan(band[valid]).all():
            lo, hi = np.nanpercentile(band[valid], (2, 98))
            out[..., i] = np.nan_to_num(np.clip((band - lo) / max(hi - lo, 1e-9) * 255, 0, 255)).astype(np.uint8)
    out[..., 3] = np.where(valid, 255, 0)
    return Image.fromarray(out, mode="RGBA")


def write_preview(store: str, time_index: int, path: Path, max_size: int = 1024) -> Image.Image:
    """Render once and save the PNG; the image is returned so a thumbnail needs no second read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = preview_image(store, time_index, max_size)
    image.save(path)
    return image


def preview_markdown(image: Image.Image, max_size: int = 256) -> str:
    """A markdown image with a thumbnail inlined as base64 (Dagster metadata has no image type)."""
    thumbnail = image.copy()
    thumbnail.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="PNG")
    return f"![preview](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"
