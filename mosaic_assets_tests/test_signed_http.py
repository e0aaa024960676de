"""Signed, expiring hrefs (``stac.modifier``) against a real server: nginx ``secure_link`` refusing
unsigned (403) and expired (410) tokens, serving byte ranges (206) that GDAL's /vsicurl/ reads.

Also pins what GDAL says when a signed read fails, since writer messages must never carry a token."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import requests
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from mosaic_assets.engine.catalog import explain_stac_failure
from mosaic_assets.engine.gdal_env import gdal_env
from mosaic_assets.engine.modifier import (
    ModifierError,
    load_modifier,
    redact_href,
    redact_text,
    signed_hrefs,
    signed_item,
    token_query,
)
from mosaic_assets.engine.spec import parse_specs
from mosaic_assets.engine.writer import gdal_messages

from . import signed_http
from .conftest import spec_document
from .signed_http import SignedHttpServer, expires_of, wait_until_expired
from .signer import recorded_calls, sign_copy, sign_inplace

signed_http_factory = signed_http.signed_http_factory  # fixture
SIGNER = "mosaic_assets_tests.signer:sign_inplace"


def _write_geotiff(path: Path) -> np.ndarray:
    data = (np.arange(2 * 512 * 512) % 65521).astype(np.uint16).reshape(2, 512, 512)
    profile = dict(driver="COG", width=512, height=512, count=2, dtype="uint16", crs="EPSG:32632")
    with rasterio.open(path, "w", transform=from_origin(600000, 5200000, 10, 10), blocksize=256, **profile) as dst:
        dst.write(data)
    return data


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, signed_http_factory) -> tuple[SignedHttpServer, np.ndarray]:
    root = tmp_path_factory.mktemp("signed-www")
    data = _write_geotiff(root / "scene.tif")
    return signed_http_factory(root), data


@pytest.fixture
def server(served) -> SignedHttpServer:
    return served[0]


def _scene(server: SignedHttpServer, name: str) -> str:
    """A copy of the GeoTIFF under its own name: GDAL caches what it learnt about a URL (a failure
    included) per process, so each GDAL test reads a URL no other test has touched."""
    shutil.copyfile(server.root / "scene.tif", server.root / name)
    return server.href(name)


def _item(href: str, item_id: str = "scene-1") -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "signed",
        "properties": {"datetime": "2024-06-01T00:00:00Z"},
        "geometry": None,
        "links": [],
        "assets": {"data": {"href": href, "type": "image/tiff"}, "local": {"href": "/data/scenes/x.tif"}},
    }


# ---------------------------------------------------------------- the server


def test_signed_url_serves_byte_ranges(server: SignedHttpServer):
    signed = server.sign(server.href("scene.tif"))
    whole = (server.root / "scene.tif").read_bytes()
    response = requests.get(signed, headers={"Range": "bytes=100-199"}, timeout=10)
    assert response.status_code == 206
    assert response.content == whole[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    (logged,) = server.logged(uri="/scene.tif", range="bytes=100-199")
    assert (logged["method"], logged["status"], logged["bytes"], logged["link"]) == ("GET", "206", "100", "1")
    assert "md5" not in (server.data_dir / "access.log").read_text()  # the log never holds a token


def test_unsigned_or_forged_urls_are_refused(server: SignedHttpServer):
    href = server.href("scene.tif")
    signed = server.sign(href)
    other = server.sign(server.href("other.tif"))
    forged = [
        href,  # no token
        signed.replace("md5=", "md5=x"),  # wrong digest
        href + "?" + other.partition("?")[2],  # a token for another path
        signed.split("&expires=")[0] + "&expires=",  # no expiry
        signed.replace(f"expires={expires_of(signed)}", f"expires={expires_of(signed) + 3600}"),  # extended
        SignedHttpServer(server.url, server.root, server.data_dir, server.port, "another-secret").sign(href),
    ]
    assert [requests.get(u, timeout=10).status_code for u in forged] == [403] * len(forged)
    assert requests.get(server.url + "/.signed-http-health", timeout=10).status_code == 204


def test_expired_token_is_410(server: SignedHttpServer):
    signed = server.sign(server.href("scene.tif"), ttl=1)
    assert requests.get(signed, headers={"Range": "bytes=0-9"}, timeout=10).status_code == 206
    wait_until_expired(signed)
    assert requests.get(signed, headers={"Range": "bytes=0-9"}, timeout=10).status_code == 410
    assert {r["link"] for r in server.logged(uri="/scene.tif", status="410")} == {"0"}


def test_start_is_idempotent(server: SignedHttpServer):
    again = signed_http.start_signed_http(server.root, port=server.port, secret=server.secret, data_dir=server.data_dir)
    assert again == server
    assert requests.get(server.sign(server.href("scene.tif")), timeout=10).status_code == 200


# ---------------------------------------------------------------- GDAL through /vsicurl/


def test_gdal_reads_a_signed_url(served):
    server, data = served
    signed = server.sign(_scene(server, "read.tif"))
    with gdal_env(), rasterio.open(f"/vsicurl/{signed}") as src:
        assert (src.count, src.width, src.crs.to_epsg()) == (2, 512, 32632)
        assert np.array_equal(src.read(2, window=((300, 320), (260, 300))), data[1, 300:320, 260:300])
    ranged = server.logged(uri="/read.tif", status="206")
    assert ranged and all(r["range"].startswith("bytes=") for r in ranged)
    assert {r["status"] for r in server.logged(uri="/read.tif")} <= {"200", "206"}


def test_gdal_open_error_names_no_url(server: SignedHttpServer):
    """Opening with an expired (or missing) token: GDAL's whole message is the status code."""
    expired = server.sign(_scene(server, "open-expired.tif"), ttl=-10)
    unsigned = _scene(server, "open-unsigned.tif")
    with gdal_env():
        with pytest.raises(RasterioIOError) as gone:
            rasterio.open(f"/vsicurl/{expired}")
        with pytest.raises(RasterioIOError) as refused:
            rasterio.open(f"/vsicurl/{unsigned}")
    assert gdal_messages(gone.value) == "HTTP response code: 410"
    assert gdal_messages(refused.value) == "HTTP response code: 403"


def test_gdal_read_error_leaks_the_token(served, caplog: pytest.LogCaptureFixture):
    """A token expiring between open and read: GDAL's GTiff message names the file by basename AND query
    (no URL, no 'HTTP 410': it reads as a short read), in the exception and in rasterio's INFO log.
    The file is larger than one of the writers' 10 MiB HTTP chunks, so the second read is a new request
    (GDAL fixes CPL_VSIL_CURL_CHUNK_SIZE at its first /vsicurl/ use in a process: it cannot be lowered)."""
    server, _ = served
    noise = np.random.default_rng(3).integers(0, 65535, (2, 2048, 2048), dtype=np.uint16)  # incompressible
    profile = dict(driver="GTiff", width=2048, height=2048, count=2, dtype="uint16", interleave="band", tiled=True)
    place = dict(crs="EPSG:32632", transform=from_origin(600000, 5200000, 10, 10))
    with rasterio.open(server.root / "read-expired.tif", "w", **profile, **place) as dst:
        dst.write(noise)
    signed = server.sign(server.href("read-expired.tif"), ttl=1)
    query = signed.partition("?")[2]
    with gdal_env(), rasterio.open(f"/vsicurl/{signed}") as src:
        src.read(1, window=((0, 1), (0, 1)))
        wait_until_expired(signed)
        with caplog.at_level("INFO", logger="rasterio"), pytest.raises(RasterioIOError) as failed:
            src.read(2, window=((1800, 2048), (1800, 2048)))
    message = gdal_messages(failed.value)
    assert f"read-expired.tif?{query}, band 2: IReadBlock failed" in message
    assert "got 0 bytes" in message and "410" not in message
    assert any(query in r.getMessage() for r in caplog.records)
    safe = redact_text(message, [signed])
    assert query not in safe and "read-expired.tif?***, band 2" in safe


def _one_tile_gti(index: str) -> str:
    return (
        f"<GDALTileIndexDataset><IndexDataset>{index}</IndexDataset><IndexLayer>index</IndexLayer>"
        "<LocationField>location</LocationField><SRS>EPSG:32632</SRS><ResX>10</ResX><ResY>10</ResY>"
        "<MinX>600000</MinX><MinY>5194880</MinY><MaxX>605120</MaxX><MaxY>5200000</MaxY>"
        '<Band band="1" dataType="UInt16"/></GDALTileIndexDataset>'
    )


def test_gti_error_quotes_the_tile_location(server: SignedHttpServer):
    """A GTI whose tile cannot be opened says ``Cannot open source <location>``: the whole signed URL."""
    signed = server.sign(_scene(server, "gti-expired.tif"), ttl=-10)
    ring = [[600000, 5194880], [605120, 5194880], [605120, 5200000], [600000, 5200000], [600000, 5194880]]
    footprint = {"type": "Polygon", "coordinates": [ring]}
    tile = {"type": "Feature", "properties": {"location": f"/vsicurl/{signed}"}, "geometry": footprint}
    index = {"type": "FeatureCollection", "name": "index", "features": [tile]}
    with MemoryFile(json.dumps(index).encode(), filename="index.geojson") as memory, gdal_env():
        with rasterio.open(_one_tile_gti(memory.name)) as mosaic, pytest.raises(RasterioIOError) as failed:
            mosaic.read(1, window=((0, 2), (0, 2)))
    message = gdal_messages(failed.value)
    assert f"Cannot open source /vsicurl/{signed} <- HTTP response code: 410" in message
    assert signed.partition("?")[2] not in redact_text(message, [signed])


def test_vrt_protocol_drops_the_token_but_query_string_option_works(served):
    """``vrt://<path>?bands=..`` (the GTI's tile locations) splits at the first '?': a signed URL inside
    loses its token (403). GDAL's VSICURL_QUERY_STRING reads the unsigned path with the token appended,
    but not a path whose failure GDAL already cached in this process: that one stays 403."""
    server, data = served
    href = _scene(server, "vrt.tif")
    with gdal_env():
        with pytest.raises(RasterioIOError, match="HTTP response code: 403"):
            rasterio.open(f"vrt:///vsicurl/{server.sign(href)}?bands=2")
    for name in ("vrt.tif", "vrt-fresh.tif"):
        href = _scene(server, name)
        signed = server.sign(href)
        with gdal_env(), rasterio.Env(VSICURL_QUERY_STRING=token_query(href, signed)):
            if name == "vrt.tif":
                with pytest.raises(RasterioIOError, match="HTTP response code: 403"):  # GDAL's cached failure
                    rasterio.open(f"vrt:///vsicurl/{href}?bands=2&ovr=NONE")
                continue
            with rasterio.open(f"vrt:///vsicurl/{href}?bands=2&ovr=NONE") as src:
                assert src.count == 1 and np.array_equal(src.read(1, window=((0, 4), (0, 4))), data[1, :4, :4])
    assert [r["status"] for r in server.logged(uri="/vrt.tif")] == ["403"]  # asked once, then cached


# ---------------------------------------------------------------- the modifier API


def test_load_modifier_from_a_spec():
    document = spec_document("http://127.0.0.1:1")
    document["mosaics"][0]["stac"]["modifier"] = SIGNER
    (spec,) = parse_specs(document)
    assert load_modifier(spec.stac.modifier) is sign_inplace


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mosaic_assets_tests.signer.sign_inplace", "must be 'package.module:function'"),
        ("no_such_package_xyz.mod:sign", "module 'no_such_package_xyz.mod' cannot be imported (ModuleNotFoundError"),
        ("mosaic_assets_tests.signer:no_such_function", "module 'mosaic_assets_tests.signer' has no attribute"),
        ("mosaic_assets_tests.signer:SECRET_ENV", "mosaic_assets_tests.signer.SECRET_ENV is a str, not a callable"),
        ("broken_modifier_module:sign", "cannot be imported (RuntimeError: broken on import)"),
    ],
)
def test_load_modifier_errors_name_the_key(value: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "broken_modifier_module.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModifierError) as error:
        load_modifier(value)
    assert str(error.value).startswith(f"stac.modifier: {value!r}") and says in str(error.value)
    assert error.value.item_id is None


def _return_pystac_item(item: dict) -> pystac.Item:
    return pystac.Item.from_dict(sign_copy(item))


@pytest.mark.parametrize("modifier", [sign_inplace, sign_copy, _return_pystac_item])
def test_signed_item_accepts_each_convention(modifier, server: SignedHttpServer, monkeypatch: pytest.MonkeyPatch):
    for name, value in server.signer_env().items():
        monkeypatch.setenv(name, value)
    item = _item(server.href("scene.tif"))
    signed = signed_item(modifier, item)
    assert item == _item(server.href("scene.tif"))  # the caller's item keeps its unsigned hrefs
    assert signed["assets"]["local"]["href"] == "/data/scenes/x.tif"  # local paths are left alone
    assert requests.get(signed["assets"]["data"]["href"], timeout=10).status_code == 200


def test_signed_item_refuses_odd_results():
    with pytest.raises(ModifierError, match="returned a str for item 'scene-1'; expected None"):
        signed_item(lambda item: "signed", _item("http://h/x.tif"))
    with pytest.raises(ModifierError, match="changed the id of item 'scene-1'"):
        signed_item(lambda item: {**item, "id": "other"}, _item("http://h/x.tif"))


def test_signed_hrefs_signs_afresh_each_call(server: SignedHttpServer, monkeypatch, tmp_path: Path):
    calls = tmp_path / "signer-calls.txt"
    for name, value in server.signer_env(ttl=1, calls=calls).items():
        monkeypatch.setenv(name, value)
    modifier = load_modifier(SIGNER)
    stored = {"data": f"/vsicurl/{server.href('scene.tif')}", "local": "/data/scenes/x.tif"}  # a scene-table row

    first = signed_hrefs(modifier, "scene-1", "signed", stored)
    assert first["data"].startswith(f"/vsicurl/{server.href('scene.tif')}?md5=")
    assert first["local"] == "/data/scenes/x.tif"
    assert requests.get(first["data"].removeprefix("/vsicurl/"), timeout=10).status_code == 200
    wait_until_expired(first["data"])
    assert requests.get(first["data"].removeprefix("/vsicurl/"), timeout=10).status_code == 410

    second = signed_hrefs(modifier, "scene-1", "signed", stored)
    assert expires_of(second["data"]) > expires_of(first["data"])
    assert requests.get(second["data"].removeprefix("/vsicurl/"), timeout=10).status_code == 200
    assert stored == {"data": f"/vsicurl/{server.href('scene.tif')}", "local": "/data/scenes/x.tif"}
    assert [line.split(" ", 1)[1] for line in recorded_calls(calls)] == ["scene-1", "scene-1"]
    assert "md5" not in calls.read_text()


def test_signed_hrefs_needs_every_asset_back():
    stored = {"data": "/vsicurl/http://h/x.tif"}
    with pytest.raises(ModifierError, match="item 'scene-1': asset 'data' has no href after signing"):
        signed_hrefs(lambda item: item["assets"].clear(), "scene-1", "c", stored)
    to_s3 = lambda item: item["assets"]["data"].update(href="s3://b/x.tif")  # noqa: E731
    with pytest.raises(ModifierError, match="asset 'data' was an http\\(s\\) URL and is not after signing"):
        signed_hrefs(to_s3, "scene-1", "c", stored)


def test_modifier_failure_names_the_item_never_the_token(server: SignedHttpServer, monkeypatch):
    for name, value in server.signer_env().items():
        monkeypatch.setenv(name, value)

    def fails_after_signing(item: dict) -> None:
        sign_inplace(item)
        raise ConnectionError(f"token service refused {item['assets']['data']['href']}")

    with pytest.raises(ModifierError) as error:
        signed_item(fails_after_signing, _item(server.href("scene.tif"), "S2A_0001"))
    message = str(error.value)
    assert "item 'S2A_0001'" in message and "fails_after_signing" in message and "ConnectionError" in message
    assert "md5" not in message and f"{server.href('scene.tif')}?***" in message
    assert error.value.item_id == "S2A_0001"
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no chained token either
    assert "md5" not in explain_stac_failure(error.value, None).message

    monkeypatch.delenv("MOSAIC_TEST_SIGNER_SECRET")
    with pytest.raises(ModifierError, match="failed on item 'S2A_0001': RuntimeError: MOSAIC_TEST_SIGNER_SECRET"):
        signed_item(sign_inplace, _item(server.href("scene.tif"), "S2A_0001"))


def test_redaction(server: SignedHttpServer):
    href = server.href("scene.tif")
    signed = server.sign(href)
    query = signed.partition("?")[2]
    assert redact_href(signed) == f"{href}?***"
    assert redact_href(f"/vsicurl/{signed}") == f"/vsicurl/{href}?***"
    assert redact_href(href) == href
    text = f"open {signed} / VRT <SourceFilename>{signed.replace('&', '&amp;')}</SourceFilename> / scene.tif?{query}"
    digest = query.split("&")[0].removeprefix("md5=")
    assert digest not in redact_text(text, [signed]) and redact_text(text, [signed]).count("***") == 3
    assert redact_text("GET https://host/x.tif?sig=abc&se=2030 failed") == "GET https://host/x.tif?*** failed"
    assert redact_text("x.tif?md5=a&expires=1, band 2: IReadBlock failed") == "x.tif?*** band 2: IReadBlock failed"
    assert redact_text("'/vsicurl/http://h/x.tif?sig=a' and what?") == "'/vsicurl/http://h/x.tif?***' and what?"


def test_token_query():
    assert token_query("/vsicurl/http://h/x.tif", "/vsicurl/http://h/x.tif?md5=a&expires=1") == "md5=a&expires=1"
    assert token_query("http://h/x.tif", "http://h/x.tif?md5=a") == "md5=a"
    assert token_query("http://h/x.tif", "http://cdn/x.tif?md5=a") is None  # not just a token added
    assert token_query("http://h/x.tif?v=2", "http://h/x.tif?v=2&md5=a") is None
    assert token_query("/data/x.tif", "/data/x.tif") is None
