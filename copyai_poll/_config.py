"""Where requests go and with which key: the client's configuration, checked up front."""

from __future__ import annotations

import functools
import os
from urllib.parse import quote

import yarl

from ._errors import CopyAIError
from ._http import is_loopback

DEFAULT_BASE_URL = "https://api.copy.ai/api"
API_KEY_ENV = "COPYAI_API_KEY"
BASE_URL_ENV = "COPYAI_BASE_URL"


@functools.lru_cache(maxsize=4096)  # the same few paths are asked for every poll
def path_of(*segments: str) -> str:
    """Join path segments, each percent-encoded: ids are opaque, never path syntax."""
    parts = []
    for segment in segments:
        if not isinstance(segment, str) or not segment:
            raise ValueError(f"ids must be non-empty strings, got {segment!r}")
        encoded = quote(segment, safe="")
        parts.append(encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded)
    return "/" + "/".join(parts)


def resolve_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    key = key.strip()
    if not key:
        raise CopyAIError(
            f"no Copy.ai API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise CopyAIError("the Copy.ai API key contains whitespace or control characters")
    return key


def resolve_base_url(base_url: str | None, allow_insecure_http: bool) -> yarl.URL:
    raw = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    try:
        url = yarl.URL(raw.strip().rstrip("/"))
    except (ValueError, TypeError) as exc:
        raise CopyAIError(f"unusable base URL {raw!r}") from exc
    if url.scheme not in {"http", "https"} or not url.host:
        raise CopyAIError(f"base URL must be an http(s) URL with a host, got {raw!r}")
    if url.user or url.password or url.query_string or url.fragment:
        raise CopyAIError("base URL must not carry credentials, a query or a fragment")
    if url.scheme == "http" and not is_loopback(url.host) and not allow_insecure_http:
        raise CopyAIError(
            f"refusing to send the API key over plain http to {url.host}; use https, "
            "or pass allow_insecure_http=True if you really mean it"
        )
    return url
