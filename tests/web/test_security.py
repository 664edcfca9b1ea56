"""Hostile input, CSRF, body limits, login throttling, CSP, TLS settings, reads behind a writer."""

import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings as hypothesis_settings
from hypothesis import strategies as st

from hubmgr import devstack
from hubmgr.deletion.models import DeletionJob
from hubmgr.web.models import ApiToken

from tests.support.factories import digest, sample_repo
from tests.support.helpers import bearer

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "image-table"}

# Any text a URL can carry: NUL and other control characters, up to U+10FFFF (a query string
# cannot carry a lone surrogate: it arrives as U+FFFD), and numbers too large for any column.
hostile_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
hostile_value = st.one_of(hostile_text, st.integers().map(str),
                          st.integers(min_value=10**18, max_value=10**4000).map(str))
TABLE_PARAMS = ("search", "q", "filter", "sort", "page", "page_size")
hostile_params = st.dictionaries(st.sampled_from(TABLE_PARAMS), hostile_value, min_size=1)
FUZZ = hypothesis_settings(max_examples=60, deadline=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])


@pytest.fixture
def table(db, logged_in, user):
    sample_repo()
    return logged_in


@pytest.mark.slow
@FUZZ
@given(params=hostile_params)
@example(params={"search": "latest\U0010ffff"})
@example(params={"search": "\U0010ffff"})
@example(params={"search": "a\x00b"})
@example(params={"search": "sha256:\x00", "page": "9" * 5000, "page_size": "-1"})
@example(params={"q": "\x00", "filter": "\x00", "sort": "\x00"})
def test_no_query_parameter_of_the_table_makes_a_server_error(table, params):
    query = urlencode(params)
    page = table.get(f"/repositories/team/app?{query}")
    partial = table.get(f"/repositories/team/app?{query}", **HTMX)
    api = table.get(f"/api/v1/repositories/team/app/images?{query}")
    assert page.status_code == 200 and partial.status_code == 200
    assert api.status_code in (200, 400), api.content
    if api.status_code == 400:
        assert "must be one of" in api.json()["error"]


@FUZZ
@given(value=hostile_value)
@example(value="\x00")
@example(value="9" * 5000)
def test_no_value_of_the_other_get_parameters_makes_a_server_error(table, value):
    from hubmgr.inventory.models import Repository

    job = DeletionJob.objects.first() or DeletionJob.objects.create(
        repository=Repository.objects.get(name="team/app"), repository_name="team/app",
        deadline=timezone.now())
    assert table.get(f"/jobs/{job.pk}/progress?{urlencode({'seen': value})}").status_code == 200
    assert table.get(f"/login/?{urlencode({'next': value})}").status_code == 200


@pytest.mark.parametrize("path", [
    "/repositories/team/app%00x",
    "/repositories/team/app/-/children/sha256:%00",
    "/api/v1/repositories/team%00/images",
])
def test_a_name_or_digest_with_nul_in_the_path_is_a_404(table, path):
    assert table.get(path).status_code == 404


def test_a_search_ending_in_the_last_code_point_still_finds_tags(table):
    from hubmgr.inventory.models import Tag

    from hubmgr.inventory.catalog.store import refresh

    Tag.objects.filter(name="1.1").update(name="1.1\U0010ffff")
    refresh(Tag.objects.get(name="1.1\U0010ffff").repository)  # as every write does
    body = table.get("/api/v1/repositories/team/app/images?search=1.1%F4%8F%BF%BF").json()
    assert [r["digest"] for r in body["results"]] == [digest("img1")]


# --- reads behind a writer (SQLite) -------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_reads_answer_while_another_process_holds_the_sqlite_write_lock(client, settings, user):
    if connection.vendor != "sqlite":
        pytest.skip("the write lock is SQLite's")
    settings.REGISTRY_URL = f"http://127.0.0.1:{devstack.free_port()}"  # the pages ping it
    sample_repo()
    client.force_login(user)
    token = ApiToken.issue(user)[1]
    assert client.get("/api/v1/repositories", **bearer(token)).status_code == 200  # first use
    writer = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE django_session SET expire_date = expire_date")
    try:
        for url, headers in [("/repositories/", {}), ("/repositories/team/app", {}),
                             ("/repositories/team/app", HTMX),
                             ("/api/v1/repositories/team/app/images", bearer(token)),
                             ("/api/v1/repositories/team/app/images", {})]:
            started = time.monotonic()
            assert client.get(url, **headers).status_code == 200, url
            assert time.monotonic() - started < 3, f"{url} waited for the write lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_sqlite_waits_for_a_writer_instead_of_failing_at_once(db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's busy timeout")
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 20_000
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_token_records_its_use_at_most_every_few_minutes(client, user):
    row, token = ApiToken.issue(user)
    for minutes_ago, recorded in ((1, False), (10, True)):
        before = timezone.now() - timedelta(minutes=minutes_ago)
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=before)
        assert client.get("/api/v1/repositories", **bearer(token)).status_code == 200
        assert (ApiToken.objects.get(pk=row.pk).last_used_at != before) is recorded


def test_a_token_whose_use_cannot_be_recorded_still_reads(client, user, monkeypatch):
    token = ApiToken.issue(user)[1]

    def locked(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr("django.db.models.query.QuerySet.update", locked)
    assert client.get("/api/v1/repositories", **bearer(token)).status_code == 200


# --- CSRF, content type and body size on the JSON API -------------------------------------

PREVIEW = "/api/v1/repositories/team/app/deletions/preview"


@pytest.fixture
def browser_client(db, maintainer):
    """A logged-in browser: Django's CSRF check applies, as it does outside tests."""
    sample_repo()
    client = Client(enforce_csrf_checks=True)
    client.force_login(maintainer)
    client.get("/repositories/team/app")  # sets the csrftoken cookie, as the page does
    return client


def post_json(client, url, body, **headers):
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def test_a_session_post_without_the_csrf_token_is_a_json_403(browser_client):
    resp = post_json(browser_client, "/api/v1/repositories/team/app/deletions",
                     {"digests": [digest("loose")]})
    assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    assert not DeletionJob.objects.exists()


def test_a_session_post_with_the_csrf_token_works(browser_client):
    csrf = browser_client.cookies["csrftoken"].value
    resp = post_json(browser_client, PREVIEW, {"digests": [digest("loose")]},
                     HTTP_X_CSRFTOKEN=csrf)
    assert resp.status_code == 200 and resp.json()["items"][0]["digest"] == digest("loose")


def test_a_bearer_token_needs_no_csrf_token(maintainer):
    sample_repo()
    token = ApiToken.issue(maintainer)[1]
    resp = post_json(Client(enforce_csrf_checks=True), PREVIEW, {"digests": [digest("loose")]},
                     **bearer(token))
    assert resp.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_post_that_is_not_json_is_a_415(browser_client, maintainer, content_type):
    body = json.dumps({"digests": [digest("loose")]})
    csrf = browser_client.cookies["csrftoken"].value
    by_session = browser_client.post(PREVIEW, body, content_type=content_type,
                                     HTTP_X_CSRFTOKEN=csrf)
    by_token = Client().post(PREVIEW, body, content_type=content_type,
                             **bearer(ApiToken.issue(maintainer)[1]))
    for resp in (by_session, by_token):
        assert resp.status_code == 415 and "application/json" in resp.json()["error"]


def test_a_body_over_the_limit_is_a_json_413(maintainer):
    sample_repo()
    body = {"digests": [digest("loose")], "padding": "x" * (8 * 2**20)}
    resp = post_json(Client(), PREVIEW, body, **bearer(ApiToken.issue(maintainer)[1]))
    assert resp.status_code == 413 and "larger than 8 MB" in resp.json()["error"]


def test_the_largest_selection_fits_in_one_request(maintainer):
    sample_repo()
    body = {"digests": [digest(n) for n in range(50_000)]}
    assert len(json.dumps(body)) > 3_500_000
    resp = post_json(Client(), PREVIEW, body, **bearer(ApiToken.issue(maintainer)[1]))
    assert resp.status_code == 200, resp.content[:300]


def test_the_web_preview_takes_a_selection_of_thousands(browser_client):
    csrf = browser_client.cookies["csrftoken"].value
    digests = [digest("loose")] + [digest(n) for n in range(2_000)]
    resp = browser_client.post("/repositories/team/app/-/preview", {"digest": digests},
                               HTTP_X_CSRFTOKEN=csrf, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and "Selected (1)" in resp.content.decode()


def test_a_web_body_over_the_limit_is_a_readable_400(browser_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    csrf = browser_client.cookies["csrftoken"].value
    resp = browser_client.post("/repositories/team/app/-/preview",
                               {"digest": [digest(n) for n in range(1_000)]},
                               HTTP_X_CSRFTOKEN=csrf, HTTP_HX_REQUEST="true")
    assert resp.status_code == 400
    assert 'role="alert">The request is larger than hubmgr accepts' in resp.content.decode()


@pytest.fixture
def temp_files(settings, tmp_path, monkeypatch):
    """The temporary directory uploads would be spooled to, and every temporary file made."""
    import tempfile

    from django.core.files import uploadedfile

    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    made = []
    real = uploadedfile.tempfile.NamedTemporaryFile

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploadedfile.tempfile, "NamedTemporaryFile", spy)
    return folder, made


def multipart_file(size):
    boundary = "hubmgr-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nviewer"
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; "
            f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.django_db
def test_a_large_upload_without_login_or_csrf_token_is_refused_unread(temp_files):
    body, content_type = multipart_file(30 * 2**20)
    start = time.monotonic()
    resp = Client(enforce_csrf_checks=True).post("/login/", body, content_type=content_type)
    assert resp.status_code == 413 and time.monotonic() - start < 2
    assert "larger than 8 MB" in resp.content.decode()
    folder, made = temp_files
    assert made == [] and list(folder.iterdir()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("csrf", [False, True])
def test_a_file_under_the_limit_is_refused_and_never_spooled_to_disk(temp_files, csrf):
    body, content_type = multipart_file(5 * 2**20)  # above Django's 2.5 MB in memory
    resp = Client(enforce_csrf_checks=csrf).post("/login/", body, content_type=content_type)
    assert resp.status_code == (403 if csrf else 400)  # no CSRF cookie: refused before reading
    folder, made = temp_files
    assert made == [] and list(folder.iterdir()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("path, json_answer", [("/login/", False), (PREVIEW, True),
                                               ("/hooks/registry", True)])
def test_a_chunked_body_is_refused_with_411(client, path, json_answer):
    resp = client.post(path, "{}", content_type="application/json",
                       HTTP_TRANSFER_ENCODING="chunked")
    assert resp.status_code == 411
    assert "Content-Length" in (resp.json()["error"] if json_answer else resp.content.decode())


@pytest.mark.django_db
def test_a_webhook_body_over_the_limit_is_a_json_413_before_the_token_check(client):
    resp = client.post("/hooks/registry", b"{" + b" " * (8 * 2**20) + b"}",
                       content_type="application/json")
    assert resp.status_code == 413 and "larger than 8 MB" in resp.json()["error"]


def test_a_login_form_still_logs_in(client, user):
    assert log_in(client, "viewer", "pw-viewer-123").status_code == 302


# --- TLS deployment settings -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]  # the checkout


def env_example():
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_check_deploy_passes_with_the_env_example_values():
    # Nothing of this test process's own settings (test_browser.py sets DJANGO_ALLOW_ASYNC_UNSAFE).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBMGR_", "DJANGO_"))}
    env.update(env_example(), HUBMGR_SECRET_KEY=secrets.token_urlsafe(50))
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy",
                             "--fail-level", "WARNING"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_behind_the_proxy_http_redirects_except_for_the_stack_internal_paths(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/login/").status_code == 301
    assert client.get("/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert client.get("/healthz").status_code in (200, 503)
    assert client.post("/hooks/registry", "{}", content_type="application/json").status_code \
        == 401


# --- login throttling ----------------------------------------------------------------------

def log_in(client, username, password, address="192.0.2.1", **headers):
    return client.post("/login/", {"username": username, "password": password},
                       REMOTE_ADDR=address, **headers)


def test_repeated_failures_lock_a_username_from_that_address_and_say_when_to_retry(client,
                                                                                   user):
    for _ in range(9):
        assert log_in(client, "viewer", "wrong").status_code == 200
    assert log_in(client, "viewer", "wrong").status_code == 429  # the tenth failure locks
    resp = log_in(client, "viewer", "pw-viewer-123")
    assert resp.status_code == 429 and "_auth_user_id" not in client.session
    html = resp.content.decode()
    assert 'role="alert">Too many failed logins' in html and "Try again in 15 minutes" in html
    assert '<form method="post" action="/login/">' in html
    # The same username from another address still logs in.
    assert log_in(client, "viewer", "pw-viewer-123", address="192.0.2.99").status_code == 302


def test_a_locked_username_does_not_lock_the_others_behind_the_same_address(
        client, user, django_user_model):
    django_user_model.objects.create_user("other", password="pw-other-123")
    for _ in range(10):
        log_in(client, "viewer", "wrong")
    assert log_in(client, "other", "pw-other-123").status_code == 302
    client.logout()
    assert log_in(client, "viewer", "pw-viewer-123").status_code == 429


def test_a_success_before_the_limit_starts_the_count_again(client, user):
    for _ in range(9):
        log_in(client, "viewer", "wrong")
    assert log_in(client, "viewer", "pw-viewer-123").status_code == 302
    client.logout()
    for _ in range(9):
        log_in(client, "viewer", "wrong")
    assert log_in(client, "viewer", "pw-viewer-123").status_code == 302


def test_the_limit_and_the_cool_off_come_from_settings(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    log_in(client, "viewer", "wrong")
    log_in(client, "viewer", "wrong")
    assert "Try again in 1 minute " in log_in(client, "viewer", "pw-viewer-123").content.decode()


def test_a_forwarded_address_counts_only_when_its_header_is_configured(client, user, settings):
    for n in range(10):  # one address, a different forged X-Forwarded-For each time
        log_in(client, "viewer", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert log_in(client, "viewer", "pw-viewer-123",
                  HTTP_X_FORWARDED_FOR="198.51.100.77").status_code == 429
    settings.CLIENT_IP_HEADER = "X-Forwarded-For"
    # Behind the proxy the last address is the proxy's view of the client.
    assert log_in(client, "viewer", "pw-viewer-123",
                  HTTP_X_FORWARDED_FOR="192.0.2.1, 198.51.100.77").status_code == 302


# --- Content-Security-Policy ---------------------------------------------------------------

@pytest.mark.parametrize("url, headers", [
    ("/login/", {}), ("/repositories/", {}), ("/repositories/team/app", {}),
    ("/repositories/team/app", HTMX), ("/jobs/", {}), ("/admin/", {}),
    ("/repositories/no/such", {}), ("/api/v1/repositories", {}),
])
def test_every_response_forbids_inline_script(table, url, headers):
    resp = table.get(url, **headers)
    policy = dict(d.strip().split(" ", 1) for d in resp["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"


def test_no_template_has_inline_script_style_or_event_handlers():
    offending = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+=|\sstyle=|<style")
    for path in (ROOT / "templates").rglob("*.html"):
        assert not offending.search(path.read_text()), path


def test_htmx_adds_no_inline_style(table):
    # htmx would insert a <style> for its indicators, and copy style attributes when it
    # settles a swap; the CSP refuses both.
    html = table.get("/repositories/").content.decode()
    config = json.loads(re.search(r'<meta name="htmx-config" content=\'([^\']+)\'>', html)[1])
    assert config["includeIndicatorStyles"] is False
    assert "style" not in config["attributesToSettle"]


def test_a_page_post_without_the_csrf_token_says_to_reload(browser_client):
    resp = browser_client.post("/repositories/team/app/-/preview", {"digest": [digest("loose")]},
                               HTTP_HX_REQUEST="true")
    assert resp.status_code == 403
    assert 'role="alert">This form\'s security token is missing' in resp.content.decode()
