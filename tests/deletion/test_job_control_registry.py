"""Job control against the real registry, through the fault-injecting proxy: a cancelled job
stops before its next DELETE and the registry keeps the rest; a DELETE in flight when the
cancel comes is recorded as it really ended; failed items are retried once the fault clears."""

import threading
import time

import pytest

from hubmgr.deletion import actions, control, jobs
from hubmgr.deletion.models import DeletionJob, ItemStatus, JobStatus
from hubmgr.inventory.registries import client_for, default_registry

from tests.support.helpers import image, process, repo, sync, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def push(registry_client, name, n):
    digests = [image(registry_client, name, tag=f"v{k}", seed=f"{name}-{k}")["digest"]
               for k in range(n)]
    sync()
    return digests


def job_of(name, digests, user=None):
    r = repo(name)
    return jobs.create_job(r, actions.plan_data(actions.make_plan(r, digests), freed=True), user)


def run_in_thread(job, concurrency=1):
    """Work ``job`` in a thread, as a worker would, one DELETE at a time."""
    result = {}

    def work():
        client = client_for(default_registry())
        try:
            result["status"] = jobs.process_job(job.pk, client, concurrency=concurrency,
                                                wait=True)
        finally:
            client.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, result


def deletes(proxy):
    return proxy.count("DELETE", r"/manifests/")


def test_a_cancelled_job_stops_before_its_next_delete(fault_proxy, registry_client,
                                                      maintainer):
    digests = push(registry_client, "control/stop", 5)
    job = job_of("control/stop", digests, maintainer)
    order = list(job.items.order_by("position").values_list("digest", flat=True))
    fault_proxy.add("DELETE", r"/manifests/", "late", 1.5, times=1)  # the first takes 1.5 s
    thread, result = run_in_thread(job)
    assert wait_until(lambda: deletes(fault_proxy) == 1, timeout=10)
    cancelled = control.cancel(DeletionJob.objects.get(pk=job.pk), maintainer)
    assert cancelled.is_cancelling  # its first DELETE is still in flight
    thread.join(30)
    assert result["status"] == JobStatus.CANCELLED
    assert deletes(fault_proxy) == 1  # no DELETE after the cancel
    job.refresh_from_db()
    assert (job.status, job.cancelled_by) == (JobStatus.CANCELLED, maintainer)
    found = dict(job.items.values_list("digest", "status"))
    assert found.pop(order[0]) == ItemStatus.DONE  # the DELETE in flight went through
    assert set(found.values()) == {ItemStatus.CANCELLED}
    assert registry_client.head_manifest("control/stop", order[0]) is None
    for digest in order[1:]:  # the registry still has the rest, and so does the inventory
        assert registry_client.head_manifest("control/stop", digest) == digest
    assert sorted(repo("control/stop").manifests.values_list("digest", flat=True)) == \
        sorted(order[1:])
    assert job.reclaim_pending and 0 < job.freed_bytes < job.reclaim_bytes


def test_a_delete_that_times_out_after_the_cancel_but_went_through_is_done(
        fault_proxy, registry_client, maintainer, settings):
    """The registry deleted the manifest, but its answer came after hubmgr stopped waiting:
    the item is recorded deleted, never cancelled."""
    settings.REGISTRY_TIMEOUT = 1
    digests = push(registry_client, "control/late", 3)
    job = job_of("control/late", digests, maintainer)
    first = job.items.order_by("position").first().digest
    fault_proxy.add("DELETE", r"/manifests/", "late", 2.5, times=1)
    thread, result = run_in_thread(job)
    assert wait_until(lambda: deletes(fault_proxy) == 1, timeout=10)
    control.cancel(DeletionJob.objects.get(pk=job.pk), maintainer)
    thread.join(30)
    assert result["status"] == JobStatus.CANCELLED and deletes(fault_proxy) == 1
    item = job.items.get(digest=first)
    assert item.status == ItemStatus.DONE
    assert registry_client.head_manifest("control/late", first) is None
    assert not repo("control/late").manifests.filter(digest=first).exists()
    assert set(job.items.exclude(digest=first).values_list("status", flat=True)) == {
        ItemStatus.CANCELLED}


def test_a_delete_that_fails_after_the_cancel_is_cancelled_and_stays(
        fault_proxy, registry_client, maintainer):
    digests = push(registry_client, "control/fail", 2)
    job = job_of("control/fail", digests, maintainer)
    first = job.items.order_by("position").first().digest
    fault_proxy.add("DELETE", r"/manifests/", "status", 503, 1.5, times=1)
    thread, result = run_in_thread(job)
    assert wait_until(lambda: deletes(fault_proxy) == 1, timeout=10)
    control.cancel(DeletionJob.objects.get(pk=job.pk), maintainer)
    thread.join(30)
    assert result["status"] == JobStatus.CANCELLED
    item = job.items.get(digest=first)
    assert item.status == ItemStatus.CANCELLED and "still in the registry" in item.last_error
    assert registry_client.head_manifest("control/fail", first) == first


def test_failed_items_are_retried_once_the_fault_clears(fault_proxy, registry_client,
                                                        maintainer, django_user_model):
    digests = push(registry_client, "control/retry", 4)
    refused = digests[1:3]
    for digest in refused:  # the registry refuses these two (credentials, a policy...)
        fault_proxy.add("DELETE", rf"/manifests/{digest}", "status", 403, times=1)
    job = job_of("control/retry", digests, maintainer)
    assert process(job) == JobStatus.PARTIAL
    job.refresh_from_db()
    assert sorted(job.items.filter(status=ItemStatus.FAILED).values_list("digest", flat=True)) \
        == sorted(refused)
    # One of them is tagged since: the retry keeps it, and says why.
    manifest = registry_client.get_manifest("control/retry", refused[0])
    registry_client.put_manifest("control/retry", "keep-me", manifest.body, manifest.media_type)
    sync()
    otto = django_user_model.objects.create_user("otto")
    otto.user_permissions.add(*maintainer.user_permissions.all())
    new = control.retry(DeletionJob.objects.get(pk=job.pk), otto)
    assert list(new.items.values_list("digest", flat=True)) == [refused[1]]
    assert new.kept[0]["digest"] == refused[0]
    assert "tagged since deletion job" in new.kept[0]["reason"] and "keep-me" in \
        new.kept[0]["reason"]
    before = deletes(fault_proxy)
    assert process(new) == JobStatus.DONE
    assert deletes(fault_proxy) == before + 1
    assert registry_client.head_manifest("control/retry", refused[1]) is None
    assert registry_client.head_manifest("control/retry", refused[0]) == refused[0]
    new.refresh_from_db()
    assert (new.retry_of_id, new.created_by) == (job.pk, otto)
    with pytest.raises(control.Refused, match="Already retried as deletion job"):
        control.retry(DeletionJob.objects.get(pk=job.pk), maintainer)


def test_a_cancel_with_a_worker_on_celery_ends_the_job(fault_proxy, registry_client,
                                                       maintainer, celery_worker, settings):
    """Through the broker, as in production: a job retrying a failing item is cancelled;
    the woken worker asks the registry about that item and finishes the job."""
    settings.DELETE_RETRY_BASE_SECONDS = settings.DELETE_RETRY_MAX_SECONDS = 120
    digests = push(registry_client, "control/celery", 2)
    fault_proxy.add("DELETE", r"/manifests/", "status", 503)  # every DELETE fails
    job = job_of("control/celery", digests, maintainer)
    actions.wake(job.pk)
    assert wait_until(lambda: DeletionJob.objects.get(pk=job.pk).status == JobStatus.RETRYING,
                      timeout=20)
    started = time.monotonic()
    control.cancel(DeletionJob.objects.get(pk=job.pk), maintainer)
    assert wait_until(lambda: DeletionJob.objects.get(pk=job.pk).is_finished, timeout=20)
    assert time.monotonic() - started < 20  # not at the next retry, two minutes away
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert set(job.items.values_list("status", flat=True)) <= {ItemStatus.CANCELLED}
    for digest in digests:
        assert registry_client.head_manifest("control/celery", digest) == digest
