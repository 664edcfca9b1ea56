"""The audited write path of cleanup policies: every change, from any side, recorded with who,
when, before and after."""

import pytest
from django.core.exceptions import ValidationError

from hubmgr.policies import service
from hubmgr.policies.models import CleanupPolicy, PolicyAudit

from tests.support.policies import RELEASE, policy


def test_every_change_is_audited_with_who_before_and_after(maintainer):
    p = service.save_policy(policy(name="untagged", remove_untagged_days=7), maintainer)
    created = PolicyAudit.objects.get()
    assert (created.action, created.user, created.before) == ("create", maintainer, None)
    assert created.after["remove_untagged_days"] == 7 and created.after["mode"] == "report"
    assert p.created_by == p.updated_by == maintainer

    p.remove_untagged_days = 14
    service.save_policy(p, maintainer)
    service.save_policy(p, maintainer)  # nothing changed: nothing to audit
    change = PolicyAudit.objects.filter(action="change").get()
    assert (change.before["remove_untagged_days"], change.after["remove_untagged_days"]) == (7, 14)

    service.delete_policy(p, maintainer)
    deleted = PolicyAudit.objects.get(action="delete")
    assert (deleted.policy, deleted.policy_name, deleted.after) == (None, "untagged", None)
    assert deleted.before["remove_untagged_days"] == 14
    assert PolicyAudit.objects.count() == 3 and not PolicyAudit.objects.filter(policy__isnull=False)


@pytest.mark.django_db
def test_an_invalid_change_saves_nothing_and_audits_nothing(maintainer):
    p = service.save_policy(policy(remove_untagged_days=7), maintainer)
    p.keep_tag_regex = "(("
    with pytest.raises(ValidationError):
        service.save_policy(p, maintainer)
    assert CleanupPolicy.objects.get().keep_tag_regex == ""
    assert PolicyAudit.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_saves_through_the_audited_path(admin_client, admin_user):
    response = admin_client.post("/admin/policies/cleanuppolicy/add/", {
        "name": "builds", "include": "team/*", "exclude": "", "mode": "report",
        "schedule": "off", "run_at": "", "weekday": "", "remove_tag_regex": "^build-",
        "remove_tag_days": "30", "remove_untagged_days": "7", "keep_last": "10",
        "keep_tag_regex": RELEASE, "keep_pulled_days": "", "brake_share": "0.5",
        "brake_count": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    audit = PolicyAudit.objects.get()
    assert (audit.action, audit.user, audit.after["keep_last"]) == ("create", admin_user, 10)
    response = admin_client.post(f"/admin/policies/cleanuppolicy/{audit.policy_id}/delete/",
                                 {"post": "yes"})
    assert response.status_code == 302
    assert PolicyAudit.objects.filter(action="delete", policy_name="builds").exists()
