"""Job control: cancelling a deletion job and retrying a finished job's failed items
(deletion/control.py, and the worker's side in jobs.py), in the database alone; the same
against the real registry is in test_job_control_registry.py."""

import logging
import threading

import pytest
from django.db import connection
from django.utils import timezone

from hubmgr.deletion import actions, control, jobs
from hubmgr.deletion.models import DeletionItem, DeletionJob, ItemStatus, JobStatus
from hubmgr.inventory.catalog.store import refresh
from hubmgr.inventory.models import Tag

from tests.support.factories import make_artifact, make_image, make_index, make_repo

pytestmark = pytest.mark.django_db


def job_of(repo, manifests, user=None, keep_attached=False):
    plan = actions.make_plan(repo, [m.digest for m in manifests], keep_attached)
    return jobs.create_job(repo, actions.plan_data(plan, freed=True), user)


def app(name="team/app", n=4):
    repo = make_repo(name)
    images = [make_image(repo, f"{name}-{k}", tags=[f"v{k}"]) for k in range(n)]
    refresh(repo)
    return repo, images


def statuses(job):
    return dict(job.items.values_list("digest", "status"))


def finish(job, outcomes):
    """Finish ``job``'s items as a worker would have: {digest: status}, the rest done."""
    for item in job.items.all():
        status = outcomes.get(item.digest, ItemStatus.DONE)
        jobs._finish(item, status, "" if status == ItemStatus.DONE else "HTTP 403: refused")
    jobs.update_status(job)
    job.refresh_from_db()
    return job


class NoDeletes:
    """A registry client for a job's worker that must not send a DELETE."""

    def __init__(self, present=()):
        self.present, self.heads = set(present), []

    def delete_manifest(self, repository, digest):
        raise AssertionError(f"DELETE {digest} sent for a cancelled job")

    def head_manifest(self, repository, digest):
        self.heads.append(digest)
        return digest if digest in self.present else None


# ---- cancel ----------------------------------------------------------------------------------
def test_cancelling_a_queued_job_cancels_every_item_and_records_who_and_when(maintainer,
                                                                             caplog):
    repo, images = app()
    job = job_of(repo, images)
    with caplog.at_level(logging.INFO, logger="hubmgr.deletion"):
        job = control.cancel(job, maintainer)
    assert job.status == JobStatus.CANCELLED and job.is_finished and job.finished_at
    assert job.cancelled_by == maintainer and job.cancelled_at <= timezone.now()
    assert set(statuses(job).values()) == {ItemStatus.CANCELLED}
    assert all("cancelled before this item's DELETE" in i.last_error for i in job.items.all())
    assert f"deletion job={job.pk} cancelled user=maria items_cancelled=4" in caplog.text
    assert job.reclaim_nothing  # nothing was deleted, so nothing waits for the collector
    assert repo.manifests.count() == 4  # the inventory keeps every item


def test_a_second_cancel_is_answered_already_cancelled(maintainer, django_user_model):
    repo, images = app()
    job = control.cancel(job_of(repo, images), maintainer)
    other = django_user_model.objects.create_user("otto")
    with pytest.raises(control.Refused, match=r"^Already cancelled by maria at .* UTC\.$"):
        control.cancel(DeletionJob.objects.get(pk=job.pk), other)
    job.refresh_from_db()
    assert job.cancelled_by == maintainer


def test_a_finished_job_cannot_be_cancelled(maintainer):
    repo, images = app()
    job = finish(job_of(repo, images), {})
    with pytest.raises(control.Refused, match="already finished \\(done\\) at .*nothing left"):
        control.cancel(job, maintainer)
    job.refresh_from_db()
    assert job.cancelled_at is None and job.status == JobStatus.DONE


def test_a_delete_in_flight_ends_as_it_ends_and_the_job_is_cancelled_after_it(maintainer):
    repo, images = app()
    job = job_of(repo, images)
    first = job.items.order_by("position").first()
    assert jobs._claim(first)  # a worker sent its DELETE
    job = control.cancel(job, maintainer)
    assert job.status != JobStatus.CANCELLED and job.is_cancelling
    assert statuses(job)[first.digest] == ItemStatus.RUNNING
    # The DELETE answers 202: deleted, and recorded as such, never as cancelled.
    jobs._finish(first, ItemStatus.DONE)
    jobs._forget(job, [first])
    jobs.update_status(job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    found = statuses(job)
    assert found.pop(first.digest) == ItemStatus.DONE
    assert set(found.values()) == {ItemStatus.CANCELLED}
    assert job.reclaim_pending and job.freed_bytes > 0  # what it did delete waits for GC


def test_the_worker_reads_the_cancel_before_each_delete(maintainer):
    repo, images = app()
    job = job_of(repo, images)
    items = list(job.items.order_by("position"))
    DeletionJob.objects.filter(pk=job.pk).update(cancelled_at=timezone.now())
    # An item the worker had already chosen, before the cancel reached its items.
    assert jobs._run_item(job, items[0], NoDeletes(), view=None) is None
    assert DeletionItem.objects.get(pk=items[0].pk).status == ItemStatus.CANCELLED


def test_a_retrying_item_of_a_cancelled_job_is_done_if_the_registry_says_it_is_gone(
        maintainer):
    """Its earlier DELETE timed out, but had reached the registry: it is not 'cancelled'."""
    repo, images = app()
    job = job_of(repo, images)
    gone, there = list(job.items.order_by("position"))[:2]
    for item in (gone, there):
        assert jobs._claim(item)
        DeletionItem.objects.filter(pk=item.pk).update(
            status=ItemStatus.RETRYING, last_error="timed out", next_attempt_at=timezone.now()
            + timezone.timedelta(minutes=5))
    job = control.cancel(job, maintainer)
    assert job.is_cancelling  # the two wait for a worker to ask the registry
    assert DeletionItem.objects.filter(job=job, status=ItemStatus.RETRYING,
                                       next_attempt_at__lte=timezone.now()).count() == 2
    client = NoDeletes(present={there.digest})
    ready = jobs._ready_items(job)
    assert {i.digest for i in ready} == {gone.digest, there.digest}
    done = [jobs._run_item(job, i, client, view=None) for i in ready]
    assert [d.digest for d in done if d] == [gone.digest]
    jobs._forget(job, [d for d in done if d])
    assert jobs.update_status(job) == JobStatus.CANCELLED
    found = {i.digest: i for i in job.items.all()}
    assert found[gone.digest].status == ItemStatus.DONE
    assert found[there.digest].status == ItemStatus.CANCELLED
    assert "still in the registry (last error: timed out)" in found[there.digest].last_error
    assert sorted(client.heads) == sorted([gone.digest, there.digest])


def test_a_finished_job_keeps_its_status(maintainer):
    repo, images = app()
    job = control.cancel(job_of(repo, images), maintainer)
    DeletionJob.objects.filter(pk=job.pk).update(cancelled_at=None)  # (as if it were not)
    jobs.update_status(job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_the_children_of_a_cancelled_index_are_cancelled_not_kept(maintainer):
    repo = make_repo("team/multi")
    kids = [make_image(repo, f"k{n}") for n in range(2)]
    index = make_index(repo, "ix", kids, tags=["1.0"])
    refresh(repo)
    job = job_of(repo, [index])
    item = job.items.get(digest=index.digest)
    jobs._finish(item, ItemStatus.CANCELLED, jobs.CANCELLED_BEFORE)
    assert jobs._ready_items(job) == []
    assert set(statuses(job).values()) == {ItemStatus.CANCELLED}


# ---- retry -----------------------------------------------------------------------------------
def test_retry_makes_a_new_job_of_the_failed_items(maintainer, django_user_model, caplog):
    repo, images = app()
    job = job_of(repo, images, user=maintainer)
    failed = {images[1].digest: ItemStatus.FAILED, images[3].digest: ItemStatus.FAILED}
    job = finish(job, failed)
    for image in images[0], images[2]:
        image.delete()  # (deleted: they left the inventory)
    refresh(repo)
    assert job.status == JobStatus.PARTIAL
    otto = django_user_model.objects.create_user("otto")
    with caplog.at_level(logging.INFO, logger="hubmgr.deletion"):
        new = control.retry(job, otto)
    assert set(statuses(new)) == set(failed) and set(statuses(new).values()) == {"queued"}
    assert new.retry_of == job and new.created_by == otto and new.status == JobStatus.QUEUED
    job.refresh_from_db()
    assert job.retried_as == new
    assert new.reclaim_bytes == actions.make_plan(repo, list(failed)).reclaim_bytes > 0
    assert f"deletion job={job.pk} retried as job={new.pk} user=otto items=2" in caplog.text
    with pytest.raises(control.Refused, match=f"^Already retried as deletion job {new.pk}"):
        control.retry(DeletionJob.objects.get(pk=job.pk), maintainer)
    assert DeletionJob.objects.count() == 2


def test_retry_refuses_what_it_cannot_retry(maintainer):
    repo, images = app()
    job = job_of(repo, images)
    with pytest.raises(control.Refused, match="has not finished"):
        control.retry(job, maintainer)
    job = finish(job, {})
    with pytest.raises(control.Refused, match="no failed item to retry"):
        control.retry(job, maintainer)
    assert DeletionJob.objects.count() == 1


def test_retry_keeps_a_failed_item_tagged_since(maintainer):
    repo, images = app()
    job = finish(job_of(repo, images), {images[0].digest: ItemStatus.FAILED,
                                        images[1].digest: ItemStatus.FAILED})
    Tag.objects.create(repository=repo, name="prod", manifest=images[0])
    new = control.retry(job, maintainer)
    assert list(statuses(new)) == [images[1].digest]
    assert new.kept == [{"digest": images[0].digest,
                         "reason": f"tagged since deletion job {job.pk}: prod"}]


def test_retry_is_refused_when_every_failed_item_is_kept_now(maintainer):
    repo, images = app()
    job = finish(job_of(repo, images), {images[0].digest: ItemStatus.FAILED})
    Tag.objects.create(repository=repo, name="prod", manifest=images[0])
    with pytest.raises(control.Refused, match="Nothing to retry: .* tagged since deletion job"):
        control.retry(job, maintainer)
    job.refresh_from_db()
    assert job.retried_as is None


def test_retry_of_a_failed_index_takes_its_children_again(maintainer):
    repo = make_repo("team/multi")
    kids = [make_image(repo, f"k{n}") for n in range(2)]
    index = make_index(repo, "ix", kids, tags=["1.0"])
    refresh(repo)
    job = job_of(repo, [index])
    item = job.items.get(digest=index.digest)
    assert jobs._claim(item)
    jobs._finish(item, ItemStatus.FAILED, "HTTP 403")
    jobs._ready_items(job)  # its children are kept: the index was not deleted
    assert jobs.update_status(job) == JobStatus.FAILED or job.status == JobStatus.PARTIAL
    new = control.retry(job, maintainer)
    items = list(new.items.order_by("position"))
    assert [i.digest for i in items] == [index.digest] + sorted(k.digest for k in kids)
    assert {i.reason for i in items[1:]} == {"unreferenced_child"}


def test_retry_deletes_only_what_the_job_was_to_delete(maintainer):
    """A signature pushed since is new: the retry keeps it, though it is attached."""
    repo = make_repo("team/signed")
    image = make_image(repo, "img", tags=["1.0"])
    refresh(repo)
    job = finish(job_of(repo, [image]), {image.digest: ItemStatus.FAILED})
    signature = make_artifact(repo, "sig", subject=image)
    refresh(repo)
    new = control.retry(job, maintainer)
    assert list(statuses(new)) == [image.digest]
    kept = {k["digest"]: k["reason"] for k in new.kept}
    assert kept[signature.digest].startswith(f"not part of deletion job {job.pk}")
    full = actions.make_plan(repo, [image.digest])
    assert new.reclaim_bytes < full.reclaim_bytes  # the signature's bytes stay


# ---- races -----------------------------------------------------------------------------------
def _at_once(n, work):
    """Run ``work(k)`` in ``n`` threads released together; their results or Refused texts."""
    both, outcomes = threading.Barrier(n), []

    def run(k):
        try:
            both.wait()
            outcomes.append(work(k))
        except control.Refused as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_two_maintainers_cancelling_at_once_cancel_once(maintainer, django_user_model):
    other = django_user_model.objects.create_user("otto")
    repo, images = app()
    job = job_of(repo, images)
    users = [maintainer, other]
    outcomes = _at_once(2, lambda k: control.cancel(DeletionJob.objects.get(pk=job.pk),
                                                    users[k]))
    refused = [o for o in outcomes if isinstance(o, str)]
    won = [o for o in outcomes if not isinstance(o, str)]
    assert len(won) == 1 and len(refused) == 1, outcomes
    job.refresh_from_db()
    assert refused[0].startswith(f"Already cancelled by {job.cancelled_by.username} at ")
    assert job.status == JobStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_two_maintainers_retrying_at_once_make_one_job(maintainer, django_user_model):
    other = django_user_model.objects.create_user("otto")
    repo, images = app()
    job = finish(job_of(repo, images), {i.digest: ItemStatus.FAILED for i in images})
    users = [maintainer, other]
    outcomes = _at_once(2, lambda k: control.retry(DeletionJob.objects.get(pk=job.pk),
                                                   users[k]).pk)
    job.refresh_from_db()
    assert job.retried_as_id in outcomes, outcomes
    assert outcomes.count(f"Already retried as deletion job {job.retried_as_id}.") == 1
    assert DeletionJob.objects.count() == 2  # the loser's job was rolled back
    assert DeletionItem.objects.filter(job_id=job.retried_as_id).count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_cancel_and_a_retry_of_one_job_at_once(maintainer, django_user_model):
    """Cancelling needs an unfinished job and retrying a finished one: of the two at once,
    the cancel goes through; the retry says why it cannot (yet)."""
    other = django_user_model.objects.create_user("otto")
    repo, images = app()
    job = job_of(repo, images)
    outcomes = _at_once(2, lambda k: (control.cancel if k == 0 else control.retry)(
        DeletionJob.objects.get(pk=job.pk), [maintainer, other][k]))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.cancelled_by == maintainer
    assert any(isinstance(o, str) and ("has not finished" in o or "no failed item" in o)
               for o in outcomes), outcomes
    assert job.retried_as is None
