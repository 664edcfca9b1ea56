"""Fixtures of the deletion tests."""

import pytest

from hubmgr import devstack


@pytest.fixture
def collect(registry):
    """Run the registry's garbage collector as an operator would: stop the registry, collect,
    start it again (same port, same storage). Returns the bytes it freed on disk."""
    started = []

    def run():
        (started[-1] if started else registry).stop()
        before = devstack.blob_bytes(registry.root)
        devstack.garbage_collect(registry.config_path)
        freed = before - devstack.blob_bytes(registry.root)
        started.append(devstack.start_registry(registry.root, int(registry.url.rsplit(":")[-1])))
        return freed

    yield run
    for service in started:
        service.stop()
