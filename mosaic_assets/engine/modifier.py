"""``stac.modifier``: sign (or otherwise rewrite) STAC items just before their hrefs are read.

The convention is pystac-client's ``modifier``: a callable given a STAC item that changes it in place
and returns None, or returns a new one (``planetary_computer:sign_inplace`` adds SAS tokens). Such
tokens expire within the hour while a backfill may run days after its catalog, so the catalog stores
UNSIGNED hrefs and each writer signs again right before it reads (``signed_hrefs``).

Signed hrefs are secrets with a lifetime: they are never written anywhere (scene table, GTI, Zarr or
Dagster metadata, logs, exception messages). Keep them in memory for the one read that needs them;
any message that could carry one goes through ``redact_href`` / ``redact_text`` first. The errors
raised here never include a signed href, and never chain the modifier's own exception (whose text
could hold one), so a traceback cannot leak it either.
"""

from __future__ import annotations

import copy
import html
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import pystac

KEY = "stac.modifier"
STAC_VERSION = "1.0.0"
VSICURL = "/vsicurl/"
REDACTED = "***"
# Any query string (a '?' then text with a '=' in it), for text whose signed hrefs are not known: a
# modifier's own error, or GDAL naming a file by basename and query (``scene.tif?md5=..&expires=.., band 2``)
_QUERY = re.compile(r"\?(?=[^\s'\"<>]*=)[^\s'\"<>]+")

Modifier = Callable[[Any], Any]


class ModifierError(ValueError):
    """``stac.modifier`` cannot be loaded, or failed on an item. ``item_id`` is None for a load error
    (a spec error: permanent) and the item's id for a failed call (possibly transient: a token service
    that is down)."""

    def __init__(self, message: str, item_id: str | None = None):
        super().__init__(message)
        self.item_id = item_id


def load_modifier(spec_value: str) -> Modifier:
    """Import ``'package.module:function'``; every error names ``stac.modifier`` and the value."""
    module_name, sep, attribute = (spec_value or "").partition(":")
    if not sep or not module_name or not attribute:
        raise ModifierError(
            f"{KEY}: {spec_value!r} must be 'package.module:function', e.g. 'planetary_computer:sign_inplace'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing as it loads
        raise ModifierError(
            f"{KEY}: {spec_value!r}: module {module_name!r} cannot be imported ({type(exc).__name__}: {exc}); "
            "is its package installed in this environment (and in the writers' image)?"
        ) from None
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise ModifierError(f"{KEY}: {spec_value!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(function):
        raise ModifierError(
            f"{KEY}: {spec_value!r}: {module_name}.{attribute} is a {type(function).__name__}, not a callable"
        )
    return function


def modifier_name(modifier: Modifier) -> str:
    """``module:qualname`` of a modifier, for messages."""
    return f"{getattr(modifier, '__module__', '?')}:{getattr(modifier, '__qualname__', repr(modifier))}"


def redact_href(href: str) -> str:
    """The href with its query string (where tokens live) replaced by ``?***``."""
    head, sep, _ = href.partition("?")
    return f"{head}?{REDACTED}" if sep else href


def redact_text(text: str, hrefs: Iterable[str] = ()) -> str:
    """``text`` with the query strings of ``hrefs`` (signed ones) replaced by ``***`` wherever they
    appear (raw, percent-encoded or XML-escaped), then every other ``?key=value...`` run up to the next
    blank or quote: GDAL names a failing file by its basename plus query (``scene.tif?md5=...&expires=...,
    band 2: IReadBlock failed``), which is no URL. Harmless query strings (``vrt://...?bands=1``) go too."""
    for href in hrefs:
        query = href.partition("?")[2]
        if query:
            for form in {query, html.escape(query), quote(query, safe="")}:
                text = text.replace(form, REDACTED)
    return _QUERY.sub(f"?{REDACTED}", text)


def _asset_hrefs(item: Mapping) -> list[str]:
    assets = item.get("assets") if isinstance(item, Mapping) else None
    if not isinstance(assets, Mapping):
        return []
    return [a["href"] for a in assets.values() if isinstance(a, Mapping) and isinstance(a.get("href"), str)]


def _as_dict(result: Any, item: dict, name: str, item_id: str) -> dict:
    if result is None:
        return item  # changed in place
    if isinstance(result, Mapping):
        return dict(result)
    if isinstance(result, pystac.Item):
        return result.to_dict(include_self_link=False, transform_hrefs=False)
    raise ModifierError(
        f"{KEY} {name} returned a {type(result).__name__} for item {item_id!r}; expected None (item changed "
        "in place), a dict or a pystac.Item",
        item_id,
    )


def signed_item(modifier: Modifier, item: dict) -> dict:
    """The modifier applied to a deep copy of ``item`` (the caller's item, holding unsigned hrefs, is
    never touched). The result keeps the item's id and has an ``assets`` mapping."""
    item_id = str(item.get("id"))
    name = modifier_name(modifier)
    work = copy.deepcopy(item)
    try:
        result = modifier(work)
    except Exception as exc:
        # ``from None``: the modifier's exception (and its cause chain) may quote a signed href
        message = redact_text(f"{type(exc).__name__}: {exc}", _asset_hrefs(work))
        raise ModifierError(f"{KEY} {name} failed on item {item_id!r}: {message}", item_id) from None
    signed = _as_dict(result, work, name, item_id)
    if str(signed.get("id")) != item_id:
        raise ModifierError(f"{KEY} {name} changed the id of item {item_id!r}", item_id)
    if not isinstance(signed.get("assets"), Mapping):
        raise ModifierError(f"{KEY} {name} left item {item_id!r} without an assets mapping", item_id)
    return signed


def _is_http(href: str) -> bool:
    return href.lower().startswith(("http://", "https://"))


def signed_hrefs(modifier: Modifier, item_id: str, collection: str | None, hrefs: Mapping[str, str]) -> dict[str, str]:
    """What a writer calls just before it reads: asset key -> signed href, from the UNSIGNED hrefs of
    the scene table. Nothing is cached: every call signs afresh, so every read gets a new expiry.

    A minimal item (id, collection, the assets' hrefs) is what the modifier gets; a modifier that
    needs more of the item than that cannot be re-applied this way. Hrefs stored as GDAL paths
    (``/vsicurl/https://...``, what ``catalog.gdal_path`` returns) reach the modifier as plain URLs,
    the form it knows, and come back with the prefix again; other hrefs pass as they are."""
    wrapped = {k for k, h in hrefs.items() if h.startswith(VSICURL) and _is_http(h.removeprefix(VSICURL))}
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "id": item_id,
        "collection": collection or None,
        "properties": {},
        "geometry": None,
        "links": [],
        "assets": {k: {"href": h.removeprefix(VSICURL) if k in wrapped else h} for k, h in hrefs.items()},
    }
    signed = signed_item(modifier, item)
    name = modifier_name(modifier)
    out = {}
    for key in hrefs:
        asset = signed["assets"].get(key)
        href = asset.get("href") if isinstance(asset, Mapping) else None
        if not isinstance(href, str) or not href:
            raise ModifierError(f"{KEY} {name}: item {item_id!r}: asset {key!r} has no href after signing", item_id)
        if key in wrapped:
            if not _is_http(href):
                raise ModifierError(
                    f"{KEY} {name}: item {item_id!r}: asset {key!r} was an http(s) URL and is not after signing",
                    item_id,
                )
            href = VSICURL + href
        out[key] = href
    return out


def token_query(unsigned: str, signed: str) -> str | None:
    """The query string signing added, when ``signed`` is ``unsigned`` (a URL or /vsicurl/ path without
    a query) plus a query and nothing else changed; else None.

    For GDAL's path-specific ``VSICURL_QUERY_STRING`` option, which lets GDAL read the unsigned path
    (as the GTI names it) with the token appended, so no token is in any GDAL file name or message."""
    if "?" in unsigned or "#" in unsigned:
        return None
    head, sep, query = signed.partition("?")
    if not sep or head != unsigned or not query or "#" in query:
        return None
    return query if urlsplit(unsigned.removeprefix(VSICURL)).scheme in ("http", "https") else None
