"""A flaky STAC API: a loopback proxy in front of the real one answers the second search page with a 500,
a slow response, malformed JSON or an empty last page. Transient faults are retried with backoff; what
cannot be fixed by retrying fails clearly; no scene table is ever written from a partial search."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest
import requests

from mosaic_assets.engine.catalog import (
    STAC_RETRIES,
    StacIncompleteError,
    open_client,
    save_scene_table,
    search_time_step,
)
from mosaic_assets.engine.spec import parse_specs

from .conftest import LoadedScenes, spec_document

pytestmark = pytest.mark.faults
FAST_RETRIES = STAC_RETRIES.new(backoff_factor=0.05, backoff_jitter=0.05)


class FaultyStac:
    """Forwards to ``upstream``; from the ``from_page``-th search request on, injects ``fault`` ``times`` times."""

    def __init__(self, upstream: str):
        self.upstream, self.fault, self.times, self.from_page = upstream, None, 0, 2
        self.searches, self.injected = 0, 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, request: http.server.BaseHTTPRequestHandler, method: str) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0)) or None
        fault = None
        with self.lock:
            if request.path.startswith("/search"):
                self.searches += 1
                if self.fault and self.searches >= self.from_page and self.injected < self.times:
                    self.injected += 1
                    fault = self.fault
        if fault == "500":
            return self._reply(request, 500, b'{"code": "InternalError"}')
        if fault == "slow":
            time.sleep(2.0)
        upstream = requests.request(
            method,
            self.upstream + request.path,
            data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            timeout=30,
        )
        text = upstream.content.replace(self.upstream.encode(), self.url.encode())
        if fault == "malformed":
            text = text[: len(text) // 2]
        if fault == "empty":
            import json

            page = json.loads(text)
            page["features"], page["links"] = [], [link for link in page.get("links", []) if link["rel"] != "next"]
            text = json.dumps(page).encode()
        self._reply(request, upstream.status_code, text)

    @staticmethod
    def _reply(request, status: int, body: bytes) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/geo+json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): fine

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def faulty(small_scenes: LoadedScenes):
    proxy = FaultyStac(small_scenes.api)
    yield proxy
    proxy.stop()


def _spec(api: str):
    # two items per page: 2024-06-01's four scenes take two pages
    return parse_specs(spec_document(api, stac={"url": api, "collections": ["test-scenes"], "query_limit": 2}))[0]


def _search(proxy: FaultyStac, timeout: float = 30.0):
    client = open_client(proxy.url, timeout=timeout, retries=FAST_RETRIES)
    return search_time_step(_spec(proxy.url), client, "2024-06-01")


def test_clean_paging_through_the_proxy_returns_every_item(faulty: FaultyStac, small_scenes: LoadedScenes) -> None:
    table = _search(faulty)
    assert len(table) == 4 and faulty.searches >= 2


@pytest.mark.parametrize("fault", ["500", "slow"])
def test_transient_fault_mid_paging_is_retried_and_the_table_is_complete(faulty: FaultyStac, fault: str) -> None:
    faulty.fault, faulty.times = fault, 2
    table = _search(faulty, timeout=1.0)
    assert faulty.injected == 2, "the fault was injected"
    assert len(table) == 4 and len(set(table["item_id"])) == 4


@pytest.mark.parametrize(
    "fault, error",
    [
        ("500", "500"),
        ("malformed", "Expecting|Unterminated|JSON|decode"),
        ("empty", "matched 4 items but paging returned 2"),
    ],
)
def test_persistent_fault_fails_clearly_and_writes_nothing(
    faulty: FaultyStac, tmp_path: Path, fault: str, error: str
) -> None:
    faulty.fault, faulty.times = fault, 1_000
    table_path = tmp_path / "catalog" / "2024-06-01.parquet"
    with pytest.raises(Exception, match=error) as failed:  # noqa: PT011  (each fault has its own type)
        save_scene_table(_search(faulty), table_path)
    if fault == "empty":
        assert isinstance(failed.value, StacIncompleteError)
    assert not table_path.exists() and not list(tmp_path.rglob("*.parquet*"))
    if fault == "500":
        assert faulty.injected == 1 + FAST_RETRIES.total, "retried with backoff before giving up"
