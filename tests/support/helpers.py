"""Images pushed to a real registry, the inventory synced from it, and other plain helpers."""

import time
from pathlib import Path

from hubmgr import devstack
from hubmgr.deletion import jobs
from hubmgr.inventory.models import Manifest, Repository
from hubmgr.inventory.registries import client_for, default_registry
from hubmgr.inventory.sync.runs import sync_registry

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def image(client, repo, tag=None, seed="x", platform="linux/amd64", layers=None,
          created="2026-01-01T00:00:00Z"):
    layers = layers or [devstack.make_layer(seed, 500)]
    return devstack.push_image(client, repo, layers, tag=tag, platform=platform, created=created)


def multiarch(client, repo, tag=None, seed="m", base=None, platforms=("linux/amd64", "linux/arm64")):
    base = base or devstack.make_layer(f"{seed}-base", 800)
    kids = [devstack.push_image(client, repo, [base, devstack.make_layer(f"{seed}-{p}", 400)],
                                platform=p) for p in platforms]
    return devstack.push_index(client, repo, kids, tag=tag), kids


def sync(repository=None):
    registry = default_registry()
    client = client_for(registry)
    try:
        return sync_registry(registry, client, repository)
    finally:
        client.close()


def process(job):
    """Run a deletion job here, to the end, as a worker would; returns how it ended."""
    client = client_for(default_registry())
    try:
        return jobs.process_job(job.pk, client, wait=True)
    finally:
        client.close()


def row(repo, digest):
    return Manifest.objects.get(repository__name=repo, digest=digest)


def repo(name):
    return Repository.objects.get(name=name)


def wait_until(check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def bearer(token):
    """The test client's headers for an API token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
