"""pytest fixtures for testing code that calls Copy.ai: ``copyai_fake``, ``copyai_client``.

Registered through the ``pytest11`` entry point. It only defines fixtures, which do
nothing until a test asks for them. They need pytest-asyncio; without it, none are defined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from ._server import FakeCopyAI

if TYPE_CHECKING:
    from copyai_poll import CopyAIClient

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only where pytest-asyncio is absent
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True

if _HAVE_PYTEST_ASYNCIO:

    @pytest.fixture
    def copyai_fake_options() -> dict[str, Any]:
        """Keyword arguments for ``copyai_fake``'s `FakeCopyAI`; override it to change them."""
        return {}

    @pytest_asyncio.fixture
    async def copyai_fake(copyai_fake_options: dict[str, Any]) -> AsyncIterator[FakeCopyAI]:
        """A started `FakeCopyAI` on 127.0.0.1, closed after the test."""
        async with FakeCopyAI(**copyai_fake_options) as server:
            yield server

    @pytest_asyncio.fixture
    async def copyai_client(copyai_fake: FakeCopyAI) -> AsyncIterator[CopyAIClient]:
        """A `CopyAIClient` pointed at ``copyai_fake``, closed after the test."""
        from copyai_poll import CopyAIClient  # Lazily: the fake must not need the client.

        async with CopyAIClient(
            api_key=copyai_fake.api_key, base_url=copyai_fake.base_url
        ) as client:
            yield client
