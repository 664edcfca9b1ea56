"""The test and demo registries start even when the port picked for one is taken before it
binds it (tests start several at once)."""

import socket
import time

import pytest
import requests

from hubmgr import devstack

pytestmark = pytest.mark.registry


@pytest.fixture
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_registry_whose_port_was_taken_meanwhile_starts_on_another(tmp_path, monkeypatch,
                                                                      busy_port):
    picks = iter([busy_port])
    real = devstack.free_port
    monkeypatch.setattr(devstack, "free_port", lambda: next(picks, None) or real())
    service = devstack.start_registry(tmp_path / "registry")
    try:
        assert service.url != f"http://127.0.0.1:{busy_port}"
        assert requests.get(service.url + "/v2/", timeout=5).status_code == 200
    finally:
        service.stop()
    assert b"address already in use" in (tmp_path / "registry" / "registry.log").read_bytes()


def test_a_registry_on_a_taken_port_it_was_given_fails_at_once(tmp_path, busy_port):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start"):
        devstack.start_registry(tmp_path / "registry", port=busy_port)
    assert time.monotonic() - started < 10  # not the 20 s wait for an answer
