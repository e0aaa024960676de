"""A test signer for ``stac.modifier``: signs http(s) asset hrefs with short-lived nginx ``secure_link``
tokens, the way ``planetary_computer.sign_inplace`` signs Azure blob hrefs with SAS tokens.

Use it from a spec as ``stac.modifier: mosaic_assets_tests.signer:sign_inplace``. The local server that
checks the tokens is ``scripts/signed_http_server.sh`` (see ``signed_http.py``). Settings come from the
environment at each call, so a test can change them between calls:

- ``MOSAIC_TEST_SIGNER_SECRET`` (required): the secret shared with the server.
- ``MOSAIC_TEST_SIGNER_TTL``: seconds a token stays valid (default 60).
- ``MOSAIC_TEST_SIGNER_CALLS``: a file that gets one line per signed item (its id, never a token), so a
  test can prove that a writer process signed again instead of reusing the catalog's tokens.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

SECRET_ENV = "MOSAIC_TEST_SIGNER_SECRET"
TTL_ENV = "MOSAIC_TEST_SIGNER_TTL"
CALLS_ENV = "MOSAIC_TEST_SIGNER_CALLS"
DEFAULT_TTL = 60
TOKEN_PARAMS = ("md5", "expires")


def secure_link_token(path: str, expires: int, secret: str) -> str:
    """nginx ``secure_link_md5 "$secure_link_expires$uri <secret>"``: base64url(md5), no padding.
    ``path`` is the URL's path as nginx sees ``$uri``: percent-decoded."""
    digest = hashlib.md5(f"{expires}{path} {secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_url(url: str, secret: str, ttl: float = DEFAULT_TTL, now: float | None = None) -> str:
    """``url`` with a token valid for ``ttl`` seconds from ``now`` (a negative ttl gives an expired one).
    A token already on the URL is replaced, other query parameters are kept."""
    parts = urlsplit(url)
    expires = int((time.time() if now is None else now) + ttl)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TOKEN_PARAMS]
    query += [("md5", secure_link_token(unquote(parts.path), expires, secret)), ("expires", str(expires))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _settings() -> tuple[str, float]:
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise RuntimeError(f"{SECRET_ENV} is not set: the test signer has no secret to sign with")
    raw = os.environ.get(TTL_ENV) or str(DEFAULT_TTL)
    try:
        return secret, float(raw)
    except ValueError:
        raise RuntimeError(f"{TTL_ENV}={raw!r} is not a number of seconds") from None


def _is_http(href: object) -> bool:
    return isinstance(href, str) and href.lower().startswith(("http://", "https://"))


def _count(item_ids: Iterable[str]) -> None:
    path = os.environ.get(CALLS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as calls:  # one short append per call: safe across processes
            calls.write("".join(f"{os.getpid()} {item_id}\n" for item_id in item_ids))


def _sign_item_dict(item: dict, secret: str, ttl: float) -> None:
    for asset in (item.get("assets") or {}).values():
        if isinstance(asset, dict) and _is_http(asset.get("href")):
            asset["href"] = sign_url(asset["href"], secret, ttl)


def sign_inplace(obj: Any) -> None:
    """The modifier: signs a STAC item dict, a FeatureCollection dict, or pystac Item(s) in place."""
    secret, ttl = _settings()
    if isinstance(obj, dict):
        items = obj.get("features", []) if obj.get("type") == "FeatureCollection" else [obj]
        for item in items:
            _sign_item_dict(item, secret, ttl)
        _count(str(i.get("id")) for i in items)
        return None
    items = list(getattr(obj, "items", None) or [obj])  # pystac ItemCollection, or one pystac Item
    for item in items:
        for asset in item.assets.values():
            if _is_http(asset.href):
                asset.href = sign_url(asset.href, secret, ttl)
    _count(str(i.id) for i in items)
    return None


def sign_copy(item: dict) -> dict:
    """The other half of the convention: returns a signed copy and leaves its argument alone."""
    signed = copy.deepcopy(item)
    sign_inplace(signed)
    return signed


def recorded_calls(path: str | Path) -> list[str]:
    """Lines ``"<pid> <item id>"`` written by signers since the file was created (none: [])."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
