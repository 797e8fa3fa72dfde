"""``https://`` model files: fetched once, kept only when they have the graph's ``sha256:`` pin.

The pin is what makes a URL safe to serve from: the bytes cannot change under a version, so a
URL is as immutable as a file in the graph folder and is never fetched again while cached.
Plain ``http://`` is refused (nothing would stop the bytes being swapped on the way).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

CHUNK = 1 << 20


def shown(url: str) -> str:
    """The URL as a message may show it: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_url(url: str, pin: str | None) -> None:
    if not url.startswith("https://"):
        raise ValueError(f"model URL '{shown(url)}' must be https:// (plain http can be altered in transit)")
    if not pin:
        raise ValueError(
            f"model URL '{shown(url)}' needs a 'sha256:' pin on its node (the digest of the file)"
        )


def download(client: httpx.Client, url: str) -> Iterator[bytes]:
    """The bytes at ``url`` as chunks; ``ValueError`` naming the URL (without credentials) on failure."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise ValueError(f"model URL '{shown(url)}' answered HTTP {response.status_code}")
            yield from response.iter_bytes(CHUNK)
    except httpx.HTTPError as exc:
        raise ValueError(f"model URL '{shown(url)}' could not be fetched ({type(exc).__name__})") from exc
