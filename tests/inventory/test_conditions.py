"""The conditions of hubmgr.inventory.catalog.conditions answer the same in each of their
forms: on a loaded row, as an ORM filter or expression, and as SQL over a manifest alias."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from hubmgr.inventory.catalog import conditions
from hubmgr.inventory.models import Manifest, PushSource, Repository
from hubmgr.inventory.registries import default_registry

BASE = datetime(2026, 1, 1, tzinfo=UTC)
times = st.one_of(st.none(), st.integers(0, 400).map(lambda d: BASE + timedelta(days=d)))
rows = st.lists(st.tuples(times, st.sampled_from(["", *PushSource.values]),
                          st.integers(0, 400).map(lambda d: BASE + timedelta(days=d)), times),
                min_size=1, max_size=12)
cutoffs = st.integers(-1, 401).map(lambda d: BASE + timedelta(days=d))


def store(drawn):
    Manifest.objects.all().delete()
    repo, _ = Repository.objects.get_or_create(registry=default_registry(), name="team/app")
    Manifest.objects.bulk_create(
        Manifest(repository=repo, digest=f"sha256:{n:064x}", last_pushed=pushed,
                 last_pushed_source=source, last_pulled=pulled)
        for n, (pushed, source, _, pulled) in enumerate(drawn))
    for n, (_, _, first_seen, _) in enumerate(drawn):  # (auto_now_add on create)
        Manifest.objects.filter(digest=f"sha256:{n:064x}").update(first_seen=first_seen)
    return {m.pk: m for m in Manifest.objects.all()}


def by_sql(select, params):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT m.id, {select} FROM {Manifest._meta.db_table} m", params)
        return dict(cursor.fetchall())


def moment(value):
    """A time as the database driver gives it back, for comparing."""
    if isinstance(value, str):  # SQLite's CASE hands back text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@pytest.mark.django_db
@hsettings(max_examples=40, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows)
def test_seen_push_and_age_from_answer_alike_in_python_the_orm_and_sql(drawn):
    loaded = store(drawn)
    python = {pk: conditions.seen_push(m) is not None for pk, m in loaded.items()}
    orm = set(Manifest.objects.filter(conditions.seen_push_q()).values_list("pk", flat=True))
    sql = by_sql(f"CASE WHEN {conditions.seen_push_sql('m')[0]} THEN 1 ELSE 0 END",
                 conditions.seen_push_sql("m")[1])
    assert {pk for pk, seen in python.items() if seen} == orm
    assert {pk for pk, seen in sql.items() if seen} == orm

    python = {pk: conditions.age_from(m) for pk, m in loaded.items()}
    orm = dict(Manifest.objects.annotate(age=conditions.age_from_expression())
               .values_list("pk", "age"))
    sql = by_sql(*conditions.age_from_sql("m"))
    assert {pk: moment(v) for pk, v in sql.items()} == python == orm


# The conditions over a time, their SQL forms over a derived table's columns, as the set-wise
# policy engine gives them.
TIMED = {
    "pushed_before": lambda t: conditions.pushed_before_sql(t, "t.seen", "t.pushed"),
    "older_than": lambda t: conditions.older_than_sql(t, "t.seen", "t.pushed",
                                                      "t.first_seen"),
    "pulled_since": lambda t: conditions.pulled_since_sql(t, "t.pulled"),
    "quiet_since": lambda t: conditions.quiet_since_sql(t, "t.seen", "t.pushed", "t.pulled"),
}


def by_derived_sql(condition, params):
    seen, seen_params = conditions.seen_push_sql("m")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT t.id, CASE WHEN {condition} THEN 1 ELSE 0 END FROM ("
                       f"SELECT m.id, {seen} AS seen, m.last_pushed AS pushed, m.first_seen, "
                       f"m.last_pulled AS pulled FROM {Manifest._meta.db_table} m) t",
                       [*params, *seen_params])
        return {pk for pk, hit in cursor.fetchall() if hit}


@pytest.mark.django_db
@hsettings(max_examples=60, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, cutoffs)
@example(  # each time at the cutoff itself, and each a day either side, seen pushed or not
    [(BASE + timedelta(days=d), source, BASE + timedelta(days=f), BASE + timedelta(days=p))
     for d in (9, 10, 11) for f in (9, 10, 11) for p in (9, 10, 11)
     for source in ("", PushSource.PUSH_EVENT)] + [(None, "", BASE, None)],
    BASE + timedelta(days=10))
def test_the_timed_conditions_answer_alike_in_python_the_orm_and_sql(drawn, cutoff):
    loaded = store(drawn)
    for name, sql_form in TIMED.items():
        python = {pk for pk, m in loaded.items() if getattr(conditions, name)(m, cutoff)}
        orm = set(Manifest.objects.filter(getattr(conditions, f"{name}_q")(cutoff))
                  .values_list("pk", flat=True))
        assert python == orm, name
        assert by_derived_sql(*sql_form(cutoff)) == orm, name


@pytest.mark.django_db
@hsettings(max_examples=30, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, st.lists(st.booleans(), min_size=12, max_size=12), cutoffs)
def test_orphaned_answers_alike_in_python_the_orm_and_sql(drawn, orphans, cutoff):
    """Alone, and as the orphaned-artifacts rule composes it with older than."""
    loaded = store(drawn)
    for pk, orphan in zip(sorted(loaded), orphans):
        loaded[pk].is_orphan = orphan
        Manifest.objects.filter(pk=pk).update(is_orphan=orphan)
    python = {pk for pk, m in loaded.items() if conditions.orphaned(m)}
    orm = set(Manifest.objects.filter(conditions.orphaned_q()).values_list("pk", flat=True))
    sql, params = conditions.orphaned_sql("m")
    assert python == orm == {pk for pk, hit in by_sql(
        f"CASE WHEN {sql} THEN 1 ELSE 0 END", params).items() if hit}
    python = {pk for pk in python if conditions.older_than(loaded[pk], cutoff)}
    orm = set(Manifest.objects.filter(conditions.orphaned_q() & conditions.older_than_q(cutoff))
              .values_list("pk", flat=True))
    older, older_params = TIMED["older_than"](cutoff)
    seen, seen_params = conditions.seen_push_sql("m")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT t.id FROM (SELECT m.id, {sql} AS orphan, {seen} AS seen, "
                       "m.last_pushed AS pushed, m.first_seen "
                       f"FROM {Manifest._meta.db_table} m) t WHERE t.orphan AND {older}",
                       [*params, *seen_params, *older_params])
        assert python == orm == {pk for (pk,) in cursor.fetchall()}
