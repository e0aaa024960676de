"""Load STAC collections and items into a running STAC API through its transactions extension.

Idempotent: an existing collection or item is replaced (PUT), so re-running the demo is harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime

import requests


def upsert_collection(api_url: str, collection: dict, session: requests.Session | None = None) -> None:
    http = session or requests.Session()
    response = http.post(f"{api_url}/collections", json=collection, timeout=30)
    if response.status_code == 409:
        response = http.put(f"{api_url}/collections/{collection['id']}", json=collection, timeout=30)
    _raise_for(response, f"collection {collection['id']}")


def upsert_items(api_url: str, collection_id: str, items: list[dict], session: requests.Session | None = None) -> None:
    """POST each item (PUT when it exists); ``updated`` is stamped now when missing, as pgstac does not."""
    http = session or requests.Session()
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for item in items:
        item["properties"].setdefault("updated", now)
        url = f"{api_url}/collections/{collection_id}/items"
        response = http.post(url, json=item, timeout=30)
        if response.status_code == 409:
            response = http.put(f"{url}/{item['id']}", json=item, timeout=30)
        _raise_for(response, f"item {item['id']}")


def _raise_for(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"STAC API refused {what}: HTTP {response.status_code}: {response.text[:500]}")
