"""Shared pytest fixtures. Stage-specific fixtures live in the stage's test file; fixtures used by
several stages are appended below with a comment naming who uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO
