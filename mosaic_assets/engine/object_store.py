"""Where bytes live when the data root is not a local folder: ``s3://`` (and ``gs://``, ``az://``) URLs.

A *location* is a ``Path`` (local) or a URL string. This module is the one place that maps a
location to what each library wants: fsspec for Python I/O (zarr, parquet, small files) and GDAL's
``/vsi…`` paths for rasterio and pyogrio, so pods that share nothing but the bucket read the same files.

Credentials never pass through here: botocore and GDAL each read ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or a role) from the environment themselves, so keys cannot end up in
storage options, GTI files, Zarr metadata or logs. Only the non-secret endpoint is translated
between the two spellings: botocore's ``AWS_ENDPOINT_URL`` and GDAL's ``AWS_S3_ENDPOINT`` +
``AWS_HTTPS`` + ``AWS_VIRTUAL_HOSTING``; an operator may set either.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import fsspec

Location = Path | str

# URL scheme -> GDAL virtual file system prefix. s3 is tested; gs/az need gcsfs/adlfs installed for fsspec.
VSI_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
_REMOTE = re.compile(r"^(s3|gs|az):/+(.*)$")


def is_remote(location: Location) -> bool:
    return _REMOTE.match(str(location)) is not None


def as_location(value: Location) -> Location:
    """A URL string for object-store roots, else a local ``Path``.

    ``Path("s3://b/k")`` collapses to ``s3:/b/k``; that form is recognised and restored, so callers
    that wrapped a URL in ``Path`` still get the bucket they meant.
    """
    match = _REMOTE.match(str(value))
    if match:
        return f"{match.group(1)}://{match.group(2).rstrip('/')}"
    return Path(value)


def join(base: Location, *parts: str) -> Location:
    base = as_location(base)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def vsi_path(location: Location) -> str:
    """The name GDAL opens: ``/vsis3/bucket/key`` for ``s3://bucket/key``, the absolute path for local files."""
    location = as_location(location)
    if isinstance(location, Path):
        return str(location.resolve())
    parsed = urlparse(location)
    return f"{VSI_PREFIXES[parsed.scheme]}{parsed.netloc}{parsed.path}"


def s3_endpoint_url(env: Mapping[str, str] = os.environ) -> str | None:
    """The S3 endpoint as a URL, from botocore's variables or else from GDAL's (None: AWS itself)."""
    url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if url:
        return url.rstrip("/")
    host = env.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host.rstrip("/")
    scheme = "http" if env.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE", "OFF", "0") else "https"
    return f"{scheme}://{host}"


def s3_environment(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """The non-secret environment that points botocore *and* GDAL at one S3-compatible endpoint.

    Path-style addressing (``AWS_VIRTUAL_HOSTING=FALSE``): S3-compatible servers (MinIO, Ceph,
    SeaweedFS, rclone) rarely serve bucket subdomains.
    """
    parsed = urlparse(endpoint_url)
    return {
        "AWS_ENDPOINT_URL": endpoint_url.rstrip("/"),
        "AWS_S3_ENDPOINT": parsed.netloc,
        "AWS_HTTPS": "YES" if parsed.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_REGION": region,
    }


def gdal_s3_config(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """GDAL options for a custom endpoint known only by its botocore name; {} when GDAL's own are set.

    No credentials: GDAL reads those from the environment itself.
    """
    if env.get("AWS_S3_ENDPOINT") or not (url := s3_endpoint_url(env)):
        return {}
    options = s3_environment(url, env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")
    return {k: v for k, v in options.items() if k in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")}


def storage_options(location: Location) -> dict | None:
    """fsspec options for a location (None for local paths): only the endpoint, never keys."""
    if not is_remote(location):
        return None
    scheme = urlparse(str(as_location(location))).scheme
    if scheme == "s3" and (url := s3_endpoint_url()):
        return {"client_kwargs": {"endpoint_url": url}}
    return {}


def filesystem(location: Location) -> fsspec.AbstractFileSystem:
    location = as_location(location)
    if isinstance(location, Path):
        return fsspec.filesystem("file")
    return fsspec.filesystem(urlparse(location).scheme, **(storage_options(location) or {}))


def exists(location: Location) -> bool:
    location = as_location(location)
    if isinstance(location, Path):
        return location.exists()
    fs = filesystem(location)
    fs.invalidate_cache()  # another pod may have written it since this process last listed the prefix
    return fs.exists(location)


def version_tag(location: Location) -> str | None:
    """What changes when the object changes (local: mtime and size; object store: ETag and size), or None
    when it does not exist: lets callers cache what they derived from a file."""
    location = as_location(location)
    if isinstance(location, Path):
        try:
            stat = location.stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}-{stat.st_size}"
    fs = filesystem(location)
    fs.invalidate_cache()
    try:
        info = fs.info(location)
    except FileNotFoundError:
        return None
    return f"{info.get('ETag') or info.get('LastModified') or ''}-{info.get('size')}"


def read_bytes(location: Location) -> bytes:
    location = as_location(location)
    if isinstance(location, Path):
        return location.read_bytes()
    return filesystem(location).cat_file(location)


def write_bytes(location: Location, data: bytes) -> None:
    """Write whole or not at all: a local temp file + rename; one PUT on an object store (atomic there)."""
    location = as_location(location)
    if isinstance(location, Path):
        location.parent.mkdir(parents=True, exist_ok=True)
        tmp = location.with_name(location.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(location)
        return
    filesystem(location).pipe_file(location, data)


def upload(local: Path, location: Location) -> None:
    """Copy a finished local file to its location (a plain rename when the location is local)."""
    location = as_location(location)
    if isinstance(location, Path):
        location.parent.mkdir(parents=True, exist_ok=True)
        Path(local).replace(location)
        return
    filesystem(location).put_file(str(local), location)


def fetch(location: Location, local: Path) -> Path:
    """A local copy of a remote file, downloaded again only when the object changed (by ETag).

    Safe when several processes share the cache: each downloads to its own temp name, then renames.
    """
    location = as_location(location)
    if isinstance(location, Path):
        return location
    fs = filesystem(location)
    fs.invalidate_cache()
    info = fs.info(location)
    version = str(info.get("ETag") or info.get("size"))
    stamp = local.with_name(local.name + ".etag")
    if local.exists() and stamp.exists() and stamp.read_text() == version:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f"{local.name}.{os.getpid()}.tmp")
    fs.get_file(location, str(tmp))
    tmp.replace(local)
    stamp.write_text(version)
    return local


def local_cache_dir(location: Location) -> Path:
    """A local folder standing for a remote location, for files only this machine needs (previews, staging)."""
    location = as_location(location)
    if isinstance(location, Path):
        return location
    parsed = urlparse(location)
    return Path(tempfile.gettempdir()) / "mosaic_assets" / parsed.scheme / parsed.netloc / parsed.path.strip("/")
