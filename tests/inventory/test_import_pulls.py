"""import_pulls: last pulled (and pushed) backfilled from registry and proxy access logs."""

import gzip
import io
import json
import logging
import subprocess
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone as djtimezone
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hubmgr import devstack
from hubmgr.inventory.models import Manifest, Registry, Repository, TagHistory
from hubmgr.inventory.pulls import envelopes, pullimport
from hubmgr.inventory.pulls.accesslog import FUTURE, UNPARSEABLE, parse_line
from hubmgr.inventory.pulls.coverage import Coverage
from hubmgr.inventory.pulls.notifications import apply_events, parse_event
from hubmgr.inventory.registries import default_registry
from hubmgr.registry.client import USER_AGENT, RegistryClient

from tests.support.factories import digest, make_image, make_repo
from tests.support.helpers import image, sync
from tests.support.notifications import WEBHOOK_TOKEN

UTC = timezone.utc
T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
NGINX = '{ip} - - [{when}] "{method} {uri} HTTP/1.1" {status} 1234 "-" "{agent}"'


def nginx(when, uri, method="GET", status=200, agent="docker/27.3.1 go/go1.22.7"):
    """A line as nginx's default `combined` format writes it ($time_local in +0100 here)."""
    local = when.astimezone(timezone(timedelta(hours=1)))
    return NGINX.format(ip="10.0.0.7", when=local.strftime("%d/%b/%Y:%H:%M:%S %z"),
                        method=method, uri=uri, status=status, agent=agent)


def text_line(when, uri, method="GET", status=200, agent="skopeo/1.9.3"):
    return (f'time="{when.strftime("%Y-%m-%dT%H:%M:%S.%f")}123Z" level=info '
            f'msg="response completed" go.version=go1.19.8 http.request.host="r:5000" '
            f'http.request.method={method} http.request.uri="{uri}" '
            f'http.request.useragent="{agent}" http.response.status={status}')


def json_line(when, uri, method="GET", status=200, agent="containerd/1.7"):
    return json.dumps({"http.request.method": method, "http.request.uri": uri,
                       "http.request.useragent": agent, "http.response.status": status,
                       "level": "info", "msg": "response completed",
                       "time": when.isoformat().replace("+00:00", "Z")})


def run(tmp_path, lines, *args, name="access.log", compress=False):
    path = tmp_path / name
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    out = io.StringIO()
    call_command("import_pulls", str(path), "--json", "--no-progress", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def app(db):
    repo = make_repo("team/app")
    old = make_image(repo, "old", pushed=30)
    new = make_image(repo, "new", tags=["latest"], pushed=2)
    return repo, old, new


# ---- parsing ---------------------------------------------------------------------------------
def test_it_reads_the_three_formats_alike():
    uri = f"/v2/team/app/manifests/{digest('x')}"
    for line in (nginx(T0, uri), text_line(T0, uri), json_line(T0, uri),
                 "\ufeff" + json_line(T0, uri) + "\r\n"):
        found = parse_line(line)
        assert (found.name, found.reference, found.method, found.status) == \
            ("team/app", digest("x"), "GET", 200), line
        assert abs(found.time - T0) < timedelta(seconds=1)


def test_query_strings_are_ignored_and_the_uri_is_url_decoded():
    found = parse_line(nginx(T0, "/v2/team%2Fapp/manifests/v%31?ns=docker.io#x"))
    assert (found.name, found.reference) == ("team/app", "v1")


def test_apache_and_traefik_lines_are_read():
    apache = ('127.0.0.1 - frank [10/Oct/2026:13:55:36 -0700] "GET /v2/a/manifests/v1 '
              'HTTP/1.0" 200 2326 "http://example.com/\\"start\\"" "Mozilla/4.08 \\"q\\""')
    found = parse_line(apache)
    assert (found.name, found.useragent, found.time) == (
        "a", 'Mozilla/4.08 "q"', datetime(2026, 10, 10, 20, 55, 36, tzinfo=UTC))
    traefik = ('10.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "HEAD /v2/a/b/manifests/v1 HTTP/2.0" '
               '200 0 "-" "containerd/1.7" 42 "registry@docker" "http://172.18.0.2:5000" 3ms')
    assert parse_line(traefik).method == "HEAD"


def test_a_key_inside_a_quoted_value_is_not_taken_for_a_field():
    line = text_line(T0, "/v2/a/manifests/v1", status=404,
                     agent='evil\\" http.response.status=200 x=\\"')
    found = parse_line(line)
    assert found.status == 404 and found.useragent.startswith('evil" http.response')


def test_other_lines_are_skipped_and_malformed_manifest_lines_are_unparseable():
    assert parse_line('time="2026-11-20T10:00:00Z" level=info msg="listening on [::]:5000"') \
        is None
    assert parse_line(nginx(T0, "/v2/team/app/blobs/sha256:00")) is None
    assert parse_line(json_line(T0, "/v2/a/manifests/v1")[:-5]) is UNPARSEABLE
    assert parse_line(nginx(T0, "/v2/UPPER/manifests/v1")) is UNPARSEABLE
    assert parse_line("/manifests/ " + "x" * 20_000) is UNPARSEABLE
    assert parse_line(nginx(T0 + timedelta(days=400), "/v2/a/manifests/v1")) is FUTURE


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.binary(), st.text().map(lambda t: "/manifests/" + t),
                 st.text().map(lambda t: '{"msg":"response completed","x":"/manifests/' + t),
                 st.text().map(lambda t: 'time="' + t + ' msg="response completed /manifests/')))
def test_no_line_makes_the_parser_raise(line):
    parse_line(line)


@pytest.mark.django_db
@hsettings(max_examples=100, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(
    lambda t: nginx(T0, "/v2/team/app/manifests/" + t).encode("utf-8", "surrogatepass"))),
    max_size=20))
def test_no_log_makes_the_import_fail(tmp_path, lines):
    path = tmp_path / "fuzz.log"
    data = b"\n".join(lines)
    path.write_bytes(data)
    summary = pullimport.Importer(default_registry()).run([str(path)])
    assert summary.lines <= data.count(b"\n") + 1
    # Binary data, a gzip or bzip2 header and then garbage, or no request at all: said so.
    assert all(error.startswith(f"{path}: ") for error in summary.errors)
    assert all(len(sample) <= 200 for sample in summary.samples)


# ---- what counts ----------------------------------------------------------------------------
def test_pulls_by_digest_and_tag_are_applied_and_a_second_import_changes_nothing(tmp_path,
                                                                                  app):
    repo, old, new = app
    lines = [nginx(T0, f"/v2/team/app/manifests/{old.digest}"),
             nginx(T0 + timedelta(hours=1), "/v2/team/app/manifests/latest"),
             nginx(T0 + timedelta(hours=2), "/v2/team/app/blobs/" + digest("b")),
             "garbage with /manifests/ in it"]
    version = Repository.objects.get(pk=repo.pk).version
    first = run(tmp_path, lines)
    assert Repository.objects.get(pk=repo.pk).version > version  # open tables reload
    version = Repository.objects.get(pk=repo.pk).version
    assert (first["lines"], first["pulls"], first["applied"], first["by_digest"],
            first["assumed_current"], first["unparseable"]) == (4, 2, 2, 1, 1, 1)
    assert first["samples"] == ["garbage with /manifests/ in it"]
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.last_pulled == T0 and new.last_pulled == T0 + timedelta(hours=1)
    assert Repository.objects.get(pk=repo.pk).last_pulled == T0 + timedelta(hours=1)
    second = run(tmp_path, lines)
    assert second["manifests_updated"] == 0 and first["manifests_updated"] == 2
    assert Repository.objects.get(pk=repo.pk).version == version
    assert Manifest.objects.get(pk=new.pk).last_pulled == T0 + timedelta(hours=1)


def test_times_never_move_back(tmp_path, app):
    _, old, _ = app
    Manifest.objects.filter(pk=old.pk).update(last_pulled=T0 + timedelta(days=1))
    run(tmp_path, [nginx(T0, f"/v2/team/app/manifests/{old.digest}")])
    assert Manifest.objects.get(pk=old.pk).last_pulled == T0 + timedelta(days=1)


def test_our_own_agent_failures_and_heads_do_not_count(tmp_path, app, settings):
    _, old, _ = app
    uri = f"/v2/team/app/manifests/{old.digest}"
    lines = [nginx(T0, uri, agent=USER_AGENT), nginx(T0, uri, status=404),
             nginx(T0, uri, method="HEAD"), nginx(T0, uri, method="DELETE", status=202)]
    assert run(tmp_path, lines)["pulls"] == 0
    assert Manifest.objects.get(pk=old.pk).last_pulled is None
    settings.COUNT_HEAD_PULLS = True
    assert run(tmp_path, lines)["pulls"] == 1
    assert Manifest.objects.get(pk=old.pk).last_pulled == T0


def test_unknown_repositories_and_manifests_are_counted_not_created(tmp_path, app):
    summary = run(tmp_path, [nginx(T0, "/v2/nobody/here/manifests/v1"),
                             nginx(T0, f"/v2/team/app/manifests/{digest('gone')}"),
                             nginx(T0, "/v2/team/app/manifests/no-such-tag")])
    assert summary["unknown_repository_lines"] == 1
    assert summary["unknown_repositories"] == ["nobody/here"]
    assert summary["unknown_manifest"] == 2 and summary["applied"] == 0
    assert not Repository.objects.filter(name="nobody/here").exists()
    assert Manifest.objects.count() == 2


def test_a_pull_by_tag_is_resolved_from_the_tag_history(tmp_path, app):
    repo, old, new = app
    TagHistory.objects.create(repository=repo, tag="latest", digest=old.digest, since=T0,
                              until=T0 + timedelta(days=1), source="push_event")
    TagHistory.objects.create(repository=repo, tag="latest", digest=new.digest,
                              since=T0 + timedelta(days=1), source="push_event")
    summary = run(tmp_path, [nginx(T0 + timedelta(hours=5), "/v2/team/app/manifests/latest"),
                             nginx(T0 - timedelta(hours=5), "/v2/team/app/manifests/latest")])
    assert summary["from_history"] == 1 and summary["assumed_current"] == 1
    assert Manifest.objects.get(pk=old.pk).last_pulled == T0 + timedelta(hours=5)
    assert Manifest.objects.get(pk=new.pk).last_pulled == T0 - timedelta(hours=5)


def test_pushes_in_the_log_give_last_pushed_where_no_push_event_did(tmp_path, app):
    repo, old, new = app
    Manifest.objects.filter(pk=old.pk).update(last_pushed=T0 - timedelta(days=9),
                                              last_pushed_source="image_created")
    pushed_new = new.last_pushed
    summary = run(tmp_path, [
        nginx(T0, f"/v2/team/app/manifests/{old.digest}", method="PUT", status=201),
        nginx(T0 - timedelta(days=60), f"/v2/team/app/manifests/{new.digest}", method="PUT",
              status=201),
        nginx(T0 - timedelta(days=61), "/v2/team/app/manifests/latest", method="PUT",
              status=201)])
    assert summary["pushes"] == 3
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.last_pushed, old.last_pushed_source) == (T0, "access_log")
    assert (new.last_pushed, new.last_pushed_source) == (pushed_new, "push_event")
    point = TagHistory.objects.get(repository=repo, tag="latest")
    assert (point.digest, point.source, point.since) == \
        (new.digest, "access_log", T0 - timedelta(days=61))


def window():
    return Registry.objects.get(pk=default_registry().pk).pulls_observed_since


def hourly(start, end, uri="/v2/team/app/manifests/latest"):
    """A request every hour from start to end: a log with no gap."""
    start = start.replace(microsecond=0)
    return [nginx(start + timedelta(hours=n), uri)
            for n in range(int((end - start) / timedelta(hours=1)) + 1)]


def test_complete_moves_the_window_back_never_forward(tmp_path, app):
    now = djtimezone.now().replace(microsecond=0)
    lines = hourly(now - timedelta(days=3), now - timedelta(minutes=5))
    run(tmp_path, lines)
    assert window() is None
    summary = run(tmp_path, lines, "--complete")
    assert summary["window_moved"] and summary["window"]["action"] == "moved"
    assert window() == now - timedelta(days=3)
    assert summary["coverage"]["gaps"] == 0
    Registry.objects.update(pulls_observed_since=now - timedelta(days=4))
    summary = run(tmp_path, lines, "--complete")
    assert not summary["window_moved"] and summary["window"]["action"] == "not moved"
    assert "before the window's start" in summary["window"]["reason"]
    assert window() == now - timedelta(days=4)


# ---- the window: only as far as the evidence goes ----------------------------------------------
@pytest.fixture
def fresh(db):
    """Items a sync found minutes ago, their pushes not seen (no notifications)."""
    repo = make_repo("team/app")
    items = [make_image(repo, seed, tags=[seed]) for seed in ("a", "b")]
    Manifest.objects.update(last_pushed=djtimezone.now() - timedelta(minutes=5),
                            last_pushed_source="image_created")
    return items


def stale_count(registry):
    return Manifest.objects.filter(Coverage.of(registry).stale_q()).count()


def test_a_one_line_log_from_1970_does_not_move_the_window(tmp_path, fresh):
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    line = nginx(epoch, f"/v2/team/app/manifests/{fresh[0].digest}")
    summary = run(tmp_path, [line], "--complete")
    assert not summary["window_moved"] and window() is None
    assert summary["window"]["action"] == "not moved" and "now" in summary["window"]["reason"]
    registry = default_registry()
    assert stale_count(registry) == 0
    assert {Coverage.of(registry).stale(m) for m in Manifest.objects.all()} == {None}

    # With notifications on for an hour: still not moved, and the text says why.
    Registry.objects.update(pulls_observed_since=djtimezone.now() - timedelta(hours=1))
    out = io.StringIO()
    path = tmp_path / "epoch.log"
    path.write_text(line + "\n")
    call_command("import_pulls", str(path), "--complete", "--no-progress", stdout=out)
    assert "Pull window not moved" in out.getvalue()
    assert window() > djtimezone.now() - timedelta(hours=2)
    assert stale_count(default_registry()) == 0


def test_a_gap_in_the_log_limits_the_move_and_is_reported(tmp_path, app):
    now = djtimezone.now().replace(microsecond=0)
    early = hourly(now - timedelta(days=10), now - timedelta(days=9))
    late = hourly(now - timedelta(days=6), now - timedelta(minutes=1))
    summary = run(tmp_path, late + early, "--complete")  # in any order
    assert window() == now - timedelta(days=6)
    assert summary["coverage"]["gaps"] == 1 and summary["coverage"]["max_gap_hours"] == 24
    assert summary["coverage"]["last_gap"] == [(now - timedelta(days=9)).isoformat(),
                                               (now - timedelta(days=6)).isoformat()]
    out = io.StringIO()
    path = tmp_path / "gap.log"
    path.write_text("\n".join(early + late) + "\n")
    call_command("import_pulls", str(path), "--complete", "--no-progress", stdout=out)
    text = out.getvalue()
    assert "Gaps over 24 h between requests: 1; the last from " \
        f"{(now - timedelta(days=9)).isoformat()}" in text
    assert "Pull window not moved" in text

    # A wider bound bridges the gap; a log that ends days ago does not join "now".
    Registry.objects.update(pulls_observed_since=None)
    assert run(tmp_path, early + late, "--complete", "--max-gap", "4d")["window_moved"]
    assert window() == now - timedelta(days=10)
    Registry.objects.update(pulls_observed_since=None)
    summary = run(tmp_path, early, "--complete")
    assert window() is None and "more than the 24 h" in summary["window"]["reason"]


def test_the_window_never_moves_before_the_registry_was_first_known(tmp_path, app):
    now = djtimezone.now().replace(microsecond=0)
    _, old, new = app
    Manifest.objects.update(first_seen=now - timedelta(days=2),
                            last_pushed_source="image_created")
    # A push event three days ago counts; a push read from an access log does not.
    Manifest.objects.filter(pk=old.pk).update(last_pushed=now - timedelta(days=3),
                                              last_pushed_source="push_event")
    Manifest.objects.filter(pk=new.pk).update(last_pushed=now - timedelta(days=4),
                                              last_pushed_source="access_log")
    summary = run(tmp_path, hourly(now - timedelta(days=5), now), "--complete")
    assert window() == now - timedelta(days=3)
    assert "limited to the first time hubmgr knows" in summary["window"]["reason"]

    Manifest.objects.all().delete()
    Registry.objects.update(pulls_observed_since=None)
    summary = run(tmp_path, hourly(now - timedelta(days=5), now), "--complete")
    assert window() is None and "sync" in summary["window"]["reason"]


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def text(self):
        return "\n".join(r.getMessage() for r in self.records)


@pytest.fixture
def audit():
    """What the "hubmgr.inventory" logger writes (it may not propagate to caplog's handler)."""
    logger, handler = logging.getLogger("hubmgr.inventory"), Records()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_since_sets_the_window_and_refuses_the_future(tmp_path, app, audit):
    then = datetime(2026, 1, 1, tzinfo=UTC)
    out = io.StringIO()
    call_command("import_pulls", "--since", "2026-01-01T00:00:00Z", stdout=out)
    assert window() == then
    assert f"Pull window set from none to {then.isoformat()}" in out.getvalue()
    assert f"pull window reset registry=default from=None to={then.isoformat()}" in audit.text
    # With files, after the import; a naive time is UTC.
    summary = run(tmp_path, [nginx(T0, "/v2/team/app/manifests/latest")],
                  "--since", "2025-06-01T12:00")
    assert summary["applied"] == 1 and summary["window"]["action"] == "set"
    assert window() == datetime(2025, 6, 1, 12, tzinfo=UTC)
    future = (djtimezone.now() + timedelta(hours=1)).isoformat()
    with pytest.raises(CommandError, match="in the future"):
        call_command("import_pulls", "--since", future)
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        call_command("import_pulls", "--since", "last tuesday")
    with pytest.raises(CommandError, match="not allowed with"):
        call_command("import_pulls", "x.log", "--since", "2026-01-01", "--complete")
    assert window() == datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_reset_window_sets_it_to_now_and_is_recorded(tmp_path, fresh, audit):
    Registry.objects.update(pulls_observed_since=datetime(1970, 1, 1, tzinfo=UTC))
    assert stale_count(default_registry()) == 2  # what the 1970 log did
    before = djtimezone.now()
    out = io.StringIO()
    call_command("import_pulls", "--reset-window", stdout=out)
    assert before <= window() <= djtimezone.now()
    assert stale_count(default_registry()) == 0
    assert "Pull window set from 1970-01-01T00:00:00+00:00 to " in out.getvalue()
    record, = [r for r in audit.records if r.name == "hubmgr.inventory"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "pull window reset registry=default from=1970-01-01T00:00:00+00:00 "
        f"to={window().isoformat()} by=")
    assert record.getMessage().endswith("via=--reset-window")
    with pytest.raises(CommandError, match="FILE"):
        call_command("import_pulls")


# ---- what a log holds ---------------------------------------------------------------------------
def test_a_utf16_log_is_refused_naming_the_encoding(tmp_path, app):
    lines = "\n".join([nginx(T0, "/v2/team/app/manifests/latest")] * 3) + "\n"
    for encoding, named in (("utf-16", "UTF-16LE"), ("utf-16-be", "UTF-16BE"),
                            ("utf-32", "UTF-32LE")):
        path = tmp_path / f"{encoding}.log"
        path.write_bytes(lines.encode(encoding))
        with pytest.raises(CommandError, match=f"{path}: the file is {named[:6]} text "
                                               f"\\({named}\\).*iconv -f {named}"):
            call_command("import_pulls", str(path), "--no-progress")
    gz = tmp_path / "utf16.log.gz"
    gz.write_bytes(gzip.compress(lines.encode("utf-16")))
    with pytest.raises(CommandError, match="UTF-16"):
        call_command("import_pulls", str(gz), "--no-progress")
    assert Manifest.objects.filter(last_pulled__isnull=False).count() == 0
    proc = subprocess.run([".venv/bin/python", "manage.py", "import_pulls", "--no-progress",
                           str(tmp_path / "utf-16.log")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "UTF-16" in proc.stderr and "utf-16.log" in proc.stderr


def test_binary_data_and_a_log_with_no_request_fail_with_a_message(tmp_path, app):
    binary = tmp_path / "core"
    binary.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(CommandError, match="core: not a text log"):
        call_command("import_pulls", str(binary), "--no-progress")
    syslog = tmp_path / "syslog"
    syslog.write_text("Dec  6 01:00:00 host cron[1]: (root) CMD (true)\n" * 10)
    out = io.StringIO()
    with pytest.raises(CommandError, match="syslog: none of its 10 lines is a manifest request"):
        call_command("import_pulls", str(syslog), "--no-progress", stdout=out)
    assert "Lines read: 10" in out.getvalue()
    blank = tmp_path / "empty.log"
    blank.write_text("\n\n")
    assert run(tmp_path, [""], name="empty.log")["errors"] == []


def test_a_future_time_is_unparseable_and_never_applied(tmp_path, app):
    _, old, new = app
    now = djtimezone.now()
    ahead = now + timedelta(hours=1)
    uri = f"/v2/team/app/manifests/{old.digest}"
    lines = [nginx(ahead, uri), text_line(ahead, uri), json_line(ahead, uri),
             nginx(ahead, uri, method="PUT", status=201),
             nginx(now + timedelta(minutes=1), f"/v2/team/app/manifests/{new.digest}")]
    pushed = Manifest.objects.get(pk=old.pk).last_pushed
    summary = run(tmp_path, lines)
    old.refresh_from_db()
    assert old.last_pulled is None and old.last_pushed == pushed
    assert (summary["unparseable"], summary["pulls"], summary["future"]) == (4, 1, 4)
    assert summary["samples"][0] == lines[0]
    assert Manifest.objects.get(pk=new.pk).last_pulled is not None  # within the clock skew
    out = io.StringIO()
    call_command("import_pulls", str(tmp_path / "access.log"), "--no-progress", stdout=out)
    assert "Unparseable lines: 4 (4 dated more than 5 minutes in the future" in out.getvalue()


def test_gzip_is_read_and_a_truncated_one_applies_what_was_read_and_fails(tmp_path, app):
    _, old, new = app
    lines = [nginx(T0, f"/v2/team/app/manifests/{old.digest}")] + [
        nginx(T0 + timedelta(seconds=n), "/v2/team/app/blobs/" + digest(n))
        for n in range(20_000)]
    assert run(tmp_path, lines, compress=True)["pulls"] == 1
    Manifest.objects.update(last_pulled=None)
    path = tmp_path / "cut.log.gz"
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path.write_bytes(data[:len(data) // 2])
    out = io.StringIO()
    with pytest.raises(CommandError, match="truncated"):
        call_command("import_pulls", str(path), "--no-progress", "--complete", stdout=out)
    assert "Pulls found: 1" in out.getvalue()
    assert Manifest.objects.get(pk=old.pk).last_pulled == T0
    assert default_registry().pulls_observed_since is None  # not complete after all


def test_files_that_cannot_be_read_are_one_line_errors(tmp_path, db):
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_pulls", str(tmp_path / "missing.log"), "--no-progress")
    proc = subprocess.run([".venv/bin/python", "manage.py", "import_pulls", "--no-progress",
                           str(tmp_path / "missing.log")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "missing.log" in proc.stderr


def test_several_registries_need_a_name(tmp_path, app):
    Registry.objects.create(name="other", url="http://127.0.0.1:1")
    with pytest.raises(CommandError, match="--registry"):
        run(tmp_path, [])
    assert run(tmp_path, [nginx(T0, "/v2/team/app/manifests/latest")],
               "--registry", "default")["applied"] == 1


@pytest.mark.slow
def test_memory_stays_bounded_on_a_long_log(tmp_path, app, monkeypatch):
    repo, old, new = app
    monkeypatch.setattr(pullimport, "CHUNK_LINES", 5_000)
    uris = [f"/v2/team/app/manifests/{old.digest}", "/v2/team/app/manifests/latest",
            f"/v2/team/app/blobs/{digest('b')}", f"/v2/other/repo{0}/manifests/v1"]
    path = tmp_path / "long.log"
    with open(path, "w") as out:
        line = nginx(T0, "{}")
        for n in range(120_000):
            out.write(line.replace("20/Nov", f"{n // 86400 + 1:02d}/Oct", 1)
                      .format(uris[n % 4]) + "\n")
    importer = pullimport.Importer(default_registry())
    tracemalloc.start()
    try:
        summary = importer.run([str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.lines == 120_000 and summary.applied == 60_000
    print(f"tracemalloc peak {peak / 2**20:.1f} MiB")
    assert peak < 10 * 2**20, peak  # a chunk of 5,000 entries and a block of 1 MiB
    assert Manifest.objects.get(pk=new.pk).last_pulled.date() == datetime(2026, 10, 2).date()


# ---- tag history from push events -----------------------------------------------------------
def push_event(id, when, seed, tag="latest", action="push"):
    return parse_event(0, {
        "id": id, "timestamp": when.isoformat(), "action": action,
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "repository": "team/app", **({"digest": digest(seed)} if seed else {}),
                   "tag": tag},
        "request": {"method": "PUT", "useragent": "docker/27"}})


def history():
    return [(h.digest, h.since, h.until, h.source) for h in
            TagHistory.objects.filter(tag="latest").order_by("since")]


@pytest.mark.django_db
def test_push_events_record_tag_history_late_ones_at_their_own_time():
    registry = default_registry()
    hour = timedelta(hours=1)
    apply_events(registry, [push_event("a", T0, "a"), push_event("b", T0 + 2 * hour, "b")])
    assert history() == [(digest("a"), T0, T0 + 2 * hour, "push_event"),
                         (digest("b"), T0 + 2 * hour, None, "push_event")]
    apply_events(registry, [push_event("late", T0 + hour, "c")])  # delivered late
    apply_events(registry, [push_event("late", T0 + hour, "c")])  # and again
    assert history() == [(digest("a"), T0, T0 + hour, "push_event"),
                         (digest("c"), T0 + hour, T0 + 2 * hour, "push_event"),
                         (digest("b"), T0 + 2 * hour, None, "push_event")]
    apply_events(registry, [push_event("del", T0 + 3 * hour, None, action="delete")])
    assert history()[-1] == (digest("b"), T0 + 2 * hour, T0 + 3 * hour, "push_event")


# ---- the real registry ------------------------------------------------------------------------
def skopeo(registry, ref):
    subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                    f"docker://{registry.url.removeprefix('http://')}/{ref}"],
                   check=True, capture_output=True)


def applied(check, timeout=20):
    """Apply what the registry's notifications queued until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        envelopes.drain(default_registry())
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("formatter", ["text", "json"])
def test_a_real_registry_log_gives_what_notifications_recorded(tmp_path, settings, live_server,
                                                                formatter):
    service = devstack.start_registry(
        tmp_path / "registry", notify_url=f"{live_server.url}/hooks/registry",
        notify_token=WEBHOOK_TOKEN,
        log={"level": "info", "formatter": formatter, "accesslog": {"disabled": False}})
    settings.REGISTRY_URL = service.url
    client = RegistryClient(service.url)
    try:
        a = image(client, "live/app", tag="v1", seed="a")["digest"]
        assert applied(lambda: Manifest.objects.filter(digest=a).exists())
        sync()
        skopeo(service, f"live/app@{a}")
        time.sleep(0.3)
        skopeo(service, "live/app:v1")
        assert applied(lambda: Manifest.objects.filter(digest=a, last_pulled__isnull=False)
                       .exists())
        b = image(client, "live/app", tag="v1", seed="b")["digest"]  # the tag moves
        skopeo(service, "live/app:v1")
        assert applied(lambda: Manifest.objects.filter(digest=b, last_pulled__isnull=False)
                       .exists())
        sync()  # our own GETs are in the log too, and count for nothing
    finally:
        client.close()
        service.stop()
    envelopes.drain(default_registry())
    repo = Repository.objects.get(name="live/app")
    assert [(h.digest, h.source) for h in TagHistory.objects.filter(repository=repo)
            .order_by("since")] == [(a, "push_event"), (b, "push_event")]
    recorded = dict(Manifest.objects.filter(repository=repo).values_list("digest",
                                                                         "last_pulled"))
    Manifest.objects.update(last_pulled=None)  # a fresh inventory, as to pulls

    log = tmp_path / "registry" / "registry.log"
    out = io.StringIO()
    call_command("import_pulls", str(log), "--json", "--no-progress", stdout=out)
    summary = json.loads(out.getvalue())
    # Each request is in the log twice: the registry's own line and its combined access line.
    assert (summary["pulls"], summary["by_digest"], summary["from_history"]) == (6, 2, 4)
    assert summary["unparseable"] == 0 and summary["assumed_current"] == 0
    imported = dict(Manifest.objects.filter(repository=repo).values_list("digest",
                                                                         "last_pulled"))
    assert set(recorded) == set(imported) == {a, b}
    for found in (a, b):
        # The log line is written when the response completes, just after the event.
        assert timedelta(0) <= imported[found] - recorded[found] < timedelta(seconds=1)

    # Without the history (an inventory that never had notifications), a pull by tag is
    # counted as the tag's current digest, and said so.
    TagHistory.objects.all().delete()
    Manifest.objects.update(last_pulled=None)
    out = io.StringIO()
    call_command("import_pulls", str(log), "--json", "--no-progress", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["assumed_current"] == 4 and summary["by_digest"] == 2
    assert Manifest.objects.get(digest=b).last_pulled == imported[b]
    assert Manifest.objects.get(digest=a).last_pulled < imported[a]  # its pull by digest


def test_other_compressions_are_named_with_a_way_out(tmp_path, db):
    import bz2

    path = tmp_path / "access.log.bz2"
    path.write_bytes(bz2.compress(b"hello\n"))
    with pytest.raises(CommandError, match="bzip2.*bzcat"):
        call_command("import_pulls", str(path), "--no-progress")


NGINX_LOG = Path(__file__).parents[1] / "fixtures" / "nginx-access.log"  # as nginx writes it


def test_an_nginx_log_as_nginx_writes_it(tmp_path, app):
    _, _, new = app
    out = io.StringIO()
    call_command("import_pulls", str(NGINX_LOG), "--json", "--no-progress", stdout=out)
    summary = json.loads(out.getvalue())
    assert (summary["lines"], summary["pulls"], summary["applied"]) == (7, 1, 1)
    assert summary["unparseable"] == 1  # the 404 for a tag that cannot be
    assert Manifest.objects.get(pk=new.pk).last_pulled == datetime(2026, 11, 20, 10, 0, 1,
                                                                    tzinfo=UTC)
