"""The audit is read-only in the admin: deletion jobs with their items, policy runs, and
changes to policies and to protected tags are viewed there, never added, changed or deleted
(issue 23)."""

import pytest
from django.utils import timezone

from hubmgr.deletion import protection
from hubmgr.deletion.models import DeletionItem, DeletionJob, ProtectedTag, ProtectionAudit
from hubmgr.policies import service
from hubmgr.policies.models import PolicyAudit, PolicyRun

from tests.support.policies import keep_ten_builds

pytestmark = pytest.mark.django_db


@pytest.fixture
def records(admin_user):
    job = DeletionJob.objects.create(repository_name="team/app", created_by=admin_user,
                                     deadline=timezone.now(), reclaim_bytes=723)
    DeletionItem.objects.create(job=job, position=0, digest="sha256:" + "a" * 64,
                                kind="image", reason="selected")
    policy = keep_ten_builds()
    service.save_policy(policy, admin_user)
    run = PolicyRun.objects.create(policy=policy, report={"totals": {}})
    protection.save_rule(ProtectedTag(tag_regex="^latest$"), admin_user)
    return {"deletion/deletionjob": job, "policies/policyrun": run,
            "policies/policyaudit": PolicyAudit.objects.get(policy=policy),
            "deletion/protectionaudit": ProtectionAudit.objects.get()}


@pytest.mark.parametrize("model", ["deletion/deletionjob", "policies/policyrun",
                                   "policies/policyaudit", "deletion/protectionaudit"])
def test_audit_records_are_viewed_but_never_added_changed_or_deleted(admin_client, records,
                                                                      model):
    record = records[model]
    listing = admin_client.get(f"/admin/{model}/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert f"/admin/{model}/add/" not in page and "delete_selected" not in page
    change = f"/admin/{model}/{record.pk}/change/"
    shown = admin_client.get(change)
    assert shown.status_code == 200 and 'name="_save"' not in shown.content.decode()
    assert admin_client.get(f"/admin/{model}/add/").status_code == 403
    assert admin_client.post(change, {}).status_code == 403
    assert admin_client.post(f"/admin/{model}/{record.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/{model}/", {
        "action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
    ).status_code in (200, 302)  # the action is unknown: nothing happens
    assert type(record).objects.filter(pk=record.pk).exists()


def test_a_jobs_items_are_shown_but_not_editable(admin_client, records):
    job = records["deletion/deletionjob"]
    page = admin_client.get(f"/admin/deletion/deletionjob/{job.pk}/change/").content.decode()
    assert "sha256:" + "a" * 64 in page
    assert 'name="items-0-status"' not in page
    reclaim = DeletionJob.objects.get(pk=job.pk).reclaim_bytes
    admin_client.post(f"/admin/deletion/deletionjob/{job.pk}/change/", {"reclaim_bytes": "1"})
    assert DeletionJob.objects.get(pk=job.pk).reclaim_bytes == reclaim == 723
    assert DeletionItem.objects.filter(job=job).count() == 1
