"""Fixtures of the integration tests: a SeaweedFS S3 server for a module (``weed``) and an empty folder on fsspec's
in-memory filesystem for a test (``memory_root``); tests/integration/servers.py has what they start."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    """A SeaweedFS S3 server for the module's tests (its module skips them without the ``weed`` binary)."""
    from tests.integration.servers import Weed

    server = Weed(tmp_path_factory.mktemp("weed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def memory_root():
    """``memory://eagle-<random>``: a folder of fsspec's in-memory filesystem, removed after the test."""
    import fsspec

    root = f"memory://eagle-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
