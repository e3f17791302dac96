"""Helpers for the fake server's own tests: a raw HTTP client for one fake."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import attrs

WF = "WCFG-84e56597-ebaf-4b49-a98c-75cacd4aecaa"


@attrs.define
class Api:
    """A plain aiohttp session aimed at one fake, returning (status, decoded body)."""

    session: aiohttp.ClientSession
    base_url: str

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text

    async def start(self, workflow_id: str = WF, variables: Any = None) -> str:
        body = {"startVariables": variables if variables is not None else {"Input 1": "x"}}
        status, payload = await self.call("POST", f"/workflow/{workflow_id}/run", json=body)
        assert 200 == status, payload
        return str(payload["data"]["id"])

    async def run(self, run_id: str, workflow_id: str = WF) -> Any:
        status, payload = await self.call("GET", f"/workflow/{workflow_id}/run/{run_id}")
        assert 200 == status, payload
        return payload["data"]
