"""``gdal_translate`` through GDAL's C API, from the libgdal that rasterio bundles (GDAL 3.12, with
the GTI and Zarr drivers), via ctypes.

Why not ``rasterio.shutil.copy``: rasterio upper-cases creation-option values, and GDAL's Zarr driver
rejects ``BLOSC_CNAME=LZ4`` (blosc names are lower case). Why not ``osgeo.gdal``: the osgeo wheel
pinned here has neither GTI nor Zarr, and a second GDAL in the process would swap PROJ data.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import rasterio

_GDAL_OF_RASTER = 0x02
_GDAL_OF_VERBOSE_ERROR = 0x40


def _libgdal() -> ctypes.CDLL:
    """The libgdal rasterio already loaded (dlopen of the same path returns the same handle)."""
    libs = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
    candidates = sorted(libs.glob("libgdal-*.so*"))
    if not candidates:
        raise RuntimeError(f"no bundled libgdal under {libs}: the rasterio wheel is needed, not a system GDAL build")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.GDALOpenEx.restype = ctypes.c_void_p
    lib.GDALOpenEx.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALTranslateOptionsNew.restype = ctypes.c_void_p
    lib.GDALTranslateOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    lib.GDALTranslateOptionsFree.argtypes = [ctypes.c_void_p]
    lib.GDALTranslate.restype = ctypes.c_void_p
    lib.GDALTranslate.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.GDALClose.restype = ctypes.c_int
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.CPLSetConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
    lib.GDALAllRegister()
    return lib


def translate(source: str, destination: str, args: list[str], config: dict[str, str] | None = None) -> None:
    """``gdal_translate <args> source destination``; raises with GDAL's last error message on failure."""
    lib = _libgdal()
    for key, value in (config or {}).items():
        lib.CPLSetConfigOption(key.encode(), value.encode())
    argv = (ctypes.c_char_p * (len(args) + 1))(*[a.encode() for a in args], None)
    options = lib.GDALTranslateOptionsNew(argv, None)
    if not options:
        raise RuntimeError(f"gdal_translate options {args}: {lib.CPLGetLastErrorMsg().decode()}")
    src = lib.GDALOpenEx(source.encode(), _GDAL_OF_RASTER | _GDAL_OF_VERBOSE_ERROR, None, None, None)
    try:
        if not src:
            raise RuntimeError(f"cannot open {source}: {lib.CPLGetLastErrorMsg().decode()}")
        usage_error = ctypes.c_int(0)
        dst = lib.GDALTranslate(destination.encode(), src, options, ctypes.byref(usage_error))
        if not dst:
            raise RuntimeError(f"gdal_translate {source} -> {destination}: {lib.CPLGetLastErrorMsg().decode()}")
        if lib.GDALClose(dst) != 0:
            raise RuntimeError(f"closing {destination}: {lib.CPLGetLastErrorMsg().decode()}")
    finally:
        if src:
            lib.GDALClose(src)
        lib.GDALTranslateOptionsFree(options)
