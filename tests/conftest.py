"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fresh virtual clock."""
    return FakeClock()
