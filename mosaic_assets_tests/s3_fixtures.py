"""A real S3-compatible server for the object-storage tests, and scenes that live only on it.

The server is SeaweedFS started by the repo's own ``scripts/s3_server.sh`` on loopback (own ports
and folder, so it never meets a developer's instance). Tests look at what was stored through S3 itself.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pytest

from mosaic_assets.demo.scenes import ASSET_KEY, Scene, collection_document, generate_scenes, scene_item
from mosaic_assets.demo.stac_load import upsert_collection, upsert_items
from mosaic_assets.engine.object_store import s3_environment

from .conftest import REPO, SMALL_SCENES, reset_collection

TEST_S3_PORT = os.environ.get("TEST_S3_PORT", "9313")
BUCKET = "mosaic-test"
S3_COLLECTION = "s3-scenes"
S3_SCENES = replace(SMALL_SCENES, collection=S3_COLLECTION)  # the local tests' scenes, served from S3


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    folder: Path  # the server's own files (volumes, filer metadata)
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """What a client process needs: the endpoint in both spellings (botocore, GDAL) and the keys."""
        return {
            **s3_environment(self.endpoint),
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def fs(self) -> fsspec.AbstractFileSystem:
        """A client with explicit keys, for the tests' own look at the bucket."""
        options = {"endpoint_url": self.endpoint}
        return fsspec.filesystem("s3", key=self.access_key, secret=self.secret_key, client_kwargs=options)

    def objects(self, url: str) -> dict[str, bytes]:
        """Every object under a URL prefix, by key."""
        fs = self.fs()
        fs.invalidate_cache()
        return {key: fs.cat_file(key) for key in fs.find(url)}


def _script_env(secret_key: str, access_key: str) -> dict[str, str]:
    weed = Path(sys.executable).parent / "weed"
    return {
        **os.environ,
        "S3_PORT": TEST_S3_PORT,
        "S3_DATA_DIR": str(REPO / ".local" / "test-s3"),
        "S3_BUCKET": BUCKET,
        "S3_ACCESS_KEY": access_key,
        "S3_SECRET_KEY": secret_key,
        **({"WEED": str(weed)} if weed.exists() else {}),
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A fresh, empty server; the secret is new each session so a grep for it means something."""
    script = REPO / "scripts" / "s3_server.sh"
    access_key, secret_key = "test-access", f"test-secret-{secrets.token_hex(12)}"
    env = _script_env(secret_key, access_key)
    subprocess.run([str(script), "reset"], env=env, capture_output=True, timeout=60)
    proc = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"S3 server did not start:\n{proc.stdout}\n{proc.stderr}")
    endpoint = proc.stdout.strip().splitlines()[-1].strip()
    yield S3Server(endpoint, BUCKET, Path(env["S3_DATA_DIR"]) / "data", access_key, secret_key)
    subprocess.run([str(script), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def s3_environ(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This test process talks to the server through the environment only, like a pod."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@dataclass(frozen=True)
class S3Scenes:
    api: str
    collection: str
    scenes: list[Scene]  # local copies (the reference warp reads these)
    items: list[dict]  # hrefs are s3:// URLs


@pytest.fixture(scope="session")
def s3_scenes(stac_api: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> S3Scenes:
    """The small test scenes uploaded to the bucket and loaded as items with s3:// hrefs."""
    scenes = generate_scenes(tmp_path_factory.mktemp("s3-scenes"), S3_SCENES)
    fs = s3_server.fs()
    now = datetime.now(UTC)
    items = []
    for scene in scenes:
        url = s3_server.url(f"scenes/{scene.path.name}")
        fs.put_file(str(scene.path), url)
        item = scene_item(scene, S3_COLLECTION, now)
        item["assets"][ASSET_KEY]["href"] = url
        items.append(item)
    reset_collection(stac_api, S3_COLLECTION)
    upsert_collection(stac_api, collection_document(S3_COLLECTION, items))
    upsert_items(stac_api, S3_COLLECTION, items)
    return S3Scenes(stac_api, S3_COLLECTION, scenes, items)
