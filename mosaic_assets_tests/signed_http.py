"""A real HTTP server that refuses unsigned and expired hrefs, for tests of ``stac.modifier``.

It is Debian's nginx with ``secure_link``, started by the repo's own ``scripts/signed_http_server.sh``
for one folder, on loopback and its own port (a free one unless given), with a secret made for it.
``mosaic_assets_tests.signer`` issues the tokens it accepts; ``SignedHttpServer.signer_env`` is the
environment that signer needs, in this process (monkeypatch) or in a writer subprocess.

    with signed_http_server(folder) as server:          # or the ``signed_http_factory`` fixture
        url = server.sign(server.href("scene.tif"), ttl=60)
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from .signer import CALLS_ENV, SECRET_ENV, TTL_ENV, sign_url

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "signed_http_server.sh"
# The access log's format (signed_http_server.sh): the path, never the query string
_LOG_LINE = re.compile(
    r'^(?P<addr>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<uri>[^"]*)" (?P<status>\d+) (?P<bytes>\d+) '
    r'range="(?P<range>[^"]*)" link="(?P<link>[^"]*)"$'
)


@dataclass(frozen=True)
class SignedHttpServer:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    root: Path  # the folder served
    data_dir: Path  # config (holds the secret), pid, logs
    port: int
    secret: str

    def href(self, relative: str | Path) -> str:
        """The unsigned URL of a file under ``root`` (what a STAC item and the scene table hold)."""
        path = Path(relative)
        if path.is_absolute():
            path = path.relative_to(self.root)
        return f"{self.url}/{quote(path.as_posix())}"

    def sign(self, href: str, ttl: float = 60) -> str:
        return sign_url(href, self.secret, ttl)

    def signer_env(self, ttl: float | None = None, calls: str | Path | None = None) -> dict[str, str]:
        """What ``mosaic_assets_tests.signer`` reads: the secret, and the TTL and call log when given."""
        env = {SECRET_ENV: self.secret}
        if ttl is not None:
            env[TTL_ENV] = str(ttl)
        if calls is not None:
            env[CALLS_ENV] = str(calls)
        return env

    def requests(self) -> list[dict[str, str]]:
        """The access log so far, one dict per request: method, uri, status, bytes, range, link
        (secure_link's verdict: "1" valid, "0" expired, "" missing or wrong)."""
        try:
            lines = (self.data_dir / "access.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [m.groupdict() for m in map(_LOG_LINE.match, lines) if m]

    def logged(self, timeout: float = 5.0, **fields: str) -> list[dict[str, str]]:
        """The requests whose fields all match (``uri="/x.tif", status="410"``), waiting up to ``timeout``
        seconds for at least one: nginx logs a request just after answering it, so a client can be ahead."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.requests() if all(r.get(k) == v for k, v in fields.items())]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        _run("stop", self._env(), timeout=60)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SIGNED_HTTP_PORT": str(self.port),
            "SIGNED_HTTP_ROOT": str(self.root),
            "SIGNED_HTTP_DATA_DIR": str(self.data_dir),
            SECRET_ENV: self.secret,
        }


def _run(command: str, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"signed_http_server.sh {command} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def free_port() -> int:
    """A loopback port nobody listens on now (the script refuses one that answers meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_signed_http(
    root: str | Path,
    port: int | None = None,
    secret: str | None = None,
    data_dir: str | Path | None = None,
    timeout: float = 600,
) -> SignedHttpServer:
    """Start (or reuse, when the same folder and secret are already served there) a server for ``root``.
    ``timeout`` covers the first run's ``apt-get install nginx``."""
    port = port or free_port()
    data = Path(data_dir) if data_dir else REPO / ".local" / f"test-signed-http-{port}"
    pending = SignedHttpServer("", Path(root).resolve(), data.resolve(), port, secret or secrets.token_urlsafe(18))
    url = _run("start", pending._env(), timeout).strip().splitlines()[-1].strip()
    return SignedHttpServer(url, pending.root, pending.data_dir, port, pending.secret)


@contextmanager
def signed_http_server(root: str | Path, **options) -> Iterator[SignedHttpServer]:
    server = start_signed_http(root, **options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def signed_http_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SignedHttpServer]]:
    """``start(root, **options) -> SignedHttpServer``; every server started is stopped at the session's
    end. Its config and logs go to a pytest temp folder unless ``data_dir`` is given."""
    started: list[SignedHttpServer] = []

    def start(root: str | Path, **options) -> SignedHttpServer:
        options.setdefault("data_dir", tmp_path_factory.mktemp("signed-http"))
        server = start_signed_http(root, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def expires_of(signed: str) -> int:
    """The epoch second a signed URL (or /vsicurl/ path) stops being valid after."""
    return int(parse_qs(urlsplit(signed.removeprefix("/vsicurl/")).query)["expires"][0])


def wait_until_expired(signed: str) -> None:
    """Sleep until nginx refuses ``signed`` as expired (its clock ticks in whole seconds)."""
    time.sleep(max(0.0, expires_of(signed) + 1.05 - time.time()))
