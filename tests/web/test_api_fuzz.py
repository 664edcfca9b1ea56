"""Arbitrary JSON sent to every write endpoint of the API (and the registry's webhook) is
answered, never a 5xx: the bodies are any JSON (NaN, Infinity, huge integers, NUL characters,
lone surrogates as JSON's "\\ud800" escapes, nesting), objects with the endpoints' own field
names, and valid bodies with one field replaced. Each example runs in a transaction rolled
back afterwards, on the real database (SQLite or PostgreSQL, as configured)."""

import json

import pytest
from django.conf import settings
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hubmgr.policies import runs
from hubmgr.policies.models import CleanupPolicy
from hubmgr.web import api_policies, api_protection
from hubmgr.web.models import ApiToken
from hubmgr.web.schema import storable

from tests.support.factories import digest, policy_inventory

pytestmark = pytest.mark.django_db

VALID_POLICY = {"name": "fuzzed", "include": "team/*", "remove_untagged_days": 7,
                "remove_tag_regex": "^build-", "remove_tag_days": 1, "keep_last": 2}
# Strings that reach the interesting branches more often than random text would.
NEAR = ["", "\x00", "\ud800", "a\udfffb", "x\x00y", "NaN", "10:00", "10:00:00+05:00",
        "23:59:59Z", "24:00", "daily", "weekly", "delete", "report", "team/*", "**", "!",
        "(unclosed", "^(a+)+$", digest("build0"), "sha256:" + "a" * 64, "sha512:x",
        "8b6e2f1c-0000-4000-8000-000000000000", "a" * 10_001]

EDGES = [None, True, False, 0, -1, 1, 5.0, 0.5, 2**31, 2**63, -(2**63) - 1, 10**400, 36501,
         1e308, float("nan"), float("inf"), float("-inf"), [], {}, *NEAR]

texts = st.one_of(st.sampled_from(NEAR), st.text(max_size=20))
scalars = st.one_of(st.sampled_from(EDGES), st.integers(), st.floats(), texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10)


def bodies(fields, valid=None):
    """Any JSON; an object of ``fields`` with any values; ``valid`` with one field (or a few)
    replaced, so that one wrong value meets the checks behind the others."""
    fields = list(fields)
    named = st.fixed_dictionaries({}, optional={name: json_values for name in fields})
    choices = [json_values, st.dictionaries(texts, json_values, max_size=4), named]
    if valid is not None:
        def one(values):
            return st.builds(lambda name, value: {**valid, name: value},
                             st.sampled_from(fields), values)

        choices += [one(st.sampled_from(EDGES)), one(scalars), one(json_values),
                    named.map(lambda changed: {**valid, **changed})]
    return st.one_of(*choices)


HOOK_EVENT = st.fixed_dictionaries({}, optional={
    "id": json_values, "action": st.sampled_from(["push", "pull", "delete"]) | json_values,
    "timestamp": json_values, "request": json_values,
    "target": st.fixed_dictionaries({}, optional={
        name: json_values for name in ("repository", "digest", "tag", "mediaType", "size")})})

VALID_RULE = {"tag_regex": "^latest$", "repositories": "team/**", "note": "releases"}
# (method, URL, body strategy); {policy}, {run}, {preview}, {rule} and {job} are filled in by
# the fixture.
ENDPOINTS = {
    "create policy": ("POST", "/api/v1/policies",
                      bodies(api_policies.POLICY.fields, VALID_POLICY)),
    "change policy": ("PATCH", "/api/v1/policies/{policy}",
                      bodies(api_policies.POLICY.fields, VALID_POLICY)),
    "dry run": ("POST", "/api/v1/policies/{policy}/dry-run", bodies(["dry_run"])),
    "start run": ("POST", "/api/v1/policies/{policy}/runs", bodies(["dry_run"])),
    "confirm brake": ("POST", "/api/v1/policy-runs/{run}/confirm-brake", bodies(["force"])),
    "deletion preview": ("POST", "/api/v1/repositories/team/app/deletions/preview",
                         bodies(["digests"], {"digests": [digest("old")]})),
    "deletion start": ("POST", "/api/v1/repositories/team/app/deletions",
                       bodies(["digests", "preview_id"], {"preview_id": "{preview}"})),
    "add protected tag": ("POST", "/api/v1/protected-tags",
                          bodies(api_protection.RULE.fields, VALID_RULE)),
    "change protected tag": ("PATCH", "/api/v1/protected-tags/{rule}",
                             bodies(api_protection.RULE.fields, VALID_RULE)),
    "cancel job": ("POST", "/api/v1/deletions/{job}/cancel", bodies(["force"])),
    "retry job": ("POST", "/api/v1/deletions/{job}/retry", bodies(["force"])),
    "registry hook": ("POST", "/hooks/registry",
                      bodies(["events"]) | st.builds(lambda events: {"events": events},
                                                     st.lists(HOOK_EVENT, max_size=3))),
}


@pytest.fixture
def world(client, maintainer, monkeypatch):
    """A policy in delete mode, a run the brake stopped, a preview, a protected-tag rule, a
    deletion job, and the token of a maintainer who may also change protected tags; nothing
    is queued on the broker."""
    from django.contrib.auth.models import Permission

    from hubmgr.deletion import actions, protection
    from hubmgr.deletion.models import ProtectedTag
    from hubmgr.inventory import tasks as inventory_tasks
    from hubmgr.policies import tasks as policy_tasks

    monkeypatch.setattr(policy_tasks.execute_run, "delay", lambda *args: None)
    monkeypatch.setattr(inventory_tasks, "wake", lambda: None)
    repo = policy_inventory()
    policy = CleanupPolicy.objects.create(**{**VALID_POLICY, "name": "builds", "mode": "delete",
                                             "brake_count": 1})
    run = runs.record_run(policy, delete=True)
    assert run.status == "braked"
    preview = actions.preview(repo, [digest("old")], maintainer)
    job = actions.start(repo, [digest("new")], maintainer)
    rule = protection.save_rule(ProtectedTag(**VALID_RULE))
    maintainer.user_permissions.add(Permission.objects.get(codename="manage_protected_tags"))
    ids = {"policy": policy.pk, "run": run.pk, "preview": str(preview.pk), "rule": rule.pk,
           "job": job.pk}
    return client, ApiToken.issue(maintainer)[1], ids


def send(world, endpoint, body) -> int:
    client, token, ids = world
    method, url, _ = ENDPOINTS[endpoint]
    if body == {"preview_id": "{preview}"}:
        body = {"preview_id": ids["preview"]}
    auth = settings.WEBHOOK_TOKEN if url.startswith("/hooks/") else token
    with transaction.atomic():
        resp = client.generic(method, url.format(**ids), json.dumps(body),
                              content_type="application/json",
                              HTTP_AUTHORIZATION=f"Bearer {auth}")
        transaction.set_rollback(True)
    return resp.status_code


@pytest.mark.slow
def test_every_edge_value_in_every_field_is_answered(world):
    """Deterministic: each policy field, and each endpoint's own, set to each edge value."""
    for endpoint, fields, valid in [
            ("create policy", api_policies.POLICY.fields, VALID_POLICY),
            ("change policy", api_policies.POLICY.fields, {}),
            ("start run", ["dry_run"], {}), ("deletion preview", ["digests"], {}),
            ("deletion start", ["digests", "preview_id"], {}),
            ("add protected tag", api_protection.RULE.fields, VALID_RULE),
            ("change protected tag", api_protection.RULE.fields, {})]:
        for name in fields:
            for value in EDGES:
                status = send(world, endpoint, {**valid, name: value})
                assert status < 500, (endpoint, name, value, status)


# Examples per endpoint: more where the body has more fields.
EXAMPLES = {"create policy": 100, "change policy": 100}


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_body_gets_a_server_error(world, endpoint):
    @hsettings(max_examples=EXAMPLES.get(endpoint, 40), deadline=None, derandomize=True,
               database=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.function_scoped_fixture])
    @given(ENDPOINTS[endpoint][2])
    def check(body):
        status = send(world, endpoint, body)
        assert status < 500, (endpoint, body, status)

    check()


FORM = {"name": "formed", "include": "team/*", "schedule": "off", "mode": "report",
        "remove_untagged_days": "7", "brake_share": "0.5"}
# What a browser form can carry that the database cannot: NUL, and bytes that are not UTF-8
# (a lone surrogate encoded as UTF-8 would be), percent-encoded.
HOSTILE = ["a%00b", "%ED%A0%80", "%FF", "nan", "1e400", "99999999999", "10:00:00%2B05:00"]


@pytest.mark.slow
def test_the_policy_form_answers_what_the_database_cannot_take(world, maintainer):
    from urllib.parse import urlencode

    client, _, ids = world
    client.force_login(maintainer)
    for url in ("/policies/new", f"/policies/{ids['policy']}/edit", "/policies/preview"):
        for name in [*FORM, "exclude", "keep_tag_regex", "remove_tag_regex", "run_at",
                     "weekday", "keep_last", "brake_count", "keep_pulled_days"]:
            for value in HOSTILE:
                data = urlencode({**FORM, name: "V"}).replace("V", value)
                resp = client.post(url, data, content_type="application/x-www-form-urlencoded")
                assert resp.status_code < 500, (url, name, value)
    for policy in CleanupPolicy.objects.all():
        assert all(storable(getattr(policy, f)) for f in ("name", "include", "exclude"))
