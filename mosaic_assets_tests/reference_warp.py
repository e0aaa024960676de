"""Independent reference: GDAL's own ``gdal.Warp`` of the scenes onto the mosaic grid.

Runs as its own process and imports only the official ``osgeo`` bindings (gdal-wheel, another GDAL
build than rasterio's), so nothing of our GTI / writer path is involved. Reads a JSON job on stdin:

    {"sources": [paths, drawn first to last], "bands": [1-based indexes], "srs": wkt,
     "bounds": [minx, miny, maxx, maxy], "res": float, "resampling": str, "nodata": number,
     "src_nodata": number (optional: the scenes' own nodata, when it is not the output's),
     "use_overviews": bool, "out": path, "source_map": path}

Or ``{"jobs": [job, ...]}``: each job's ``out`` only, in one process.

Writes ``out`` (the multi-source warp: later sources drawn over earlier ones) and ``source_map``
(int16: index of the source whose pixel is on top, -1 where none), the latter made from one warp per
source, used only to tell which pixels came from reprojected scenes.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from osgeo import gdal

gdal.UseExceptions()


def _options(job: dict, output_format: str) -> gdal.WarpOptions:
    minx, miny, maxx, maxy = job["bounds"]
    return gdal.WarpOptions(
        format=output_format,
        outputBounds=(minx, miny, maxx, maxy),
        xRes=job["res"],
        yRes=job["res"],
        dstSRS=job["srs"],
        resampleAlg=job["resampling"],
        srcNodata=job.get("src_nodata", job["nodata"]),
        dstNodata=job["nodata"],
        srcBands=job["bands"],
        overviewLevel="AUTO" if job["use_overviews"] else "NONE",
        multithread=True,
    )


def main() -> int:
    job = json.load(sys.stdin)
    if "jobs" in job:  # several warps in one process (one per scene and band: composite references)
        for one in job["jobs"]:
            gdal.Warp(one["out"], one["sources"], options=_options(one, "GTiff")).Close()
        print(json.dumps({"gdal": gdal.__version__}))
        return 0
    gdal.Warp(job["out"], job["sources"], options=_options(job, "GTiff")).Close()
    source_map = None
    for i, src in enumerate(job["sources"]):
        warped = gdal.Warp("", [src], options=_options(job, "MEM"))
        data = warped.ReadAsArray()
        data = data[np.newaxis] if data.ndim == 2 else data
        valid = np.any(data != job["nodata"], axis=0)
        if source_map is None:
            source_map = np.full(valid.shape, -1, dtype=np.int16)
        source_map[valid] = i
    driver = gdal.GetDriverByName("GTiff")
    ds = driver.Create(job["source_map"], source_map.shape[1], source_map.shape[0], 1, gdal.GDT_Int16)
    ds.GetRasterBand(1).WriteArray(source_map)
    ds.Close()
    print(json.dumps({"gdal": gdal.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
