"""A policy's dry run over every covered repository at once, in SQL: what its rules select and
protect, what the deletion planner's cascade takes along or keeps, and what that frees, each
counted per repository in a few set-wise statements over temporary tables.

A report that only counts (the form's live preview) or lists the first entries of each
repository (the pages' and the API's dry runs) is made here, without reading each item into
Python: a policy over a million manifests selects half of them, and a per-item cost in Python
multiplies by that (docs/benchmarks.md has the figures). It answers what
``runs.plan_repository`` answers from the rules and the planner, entry
for entry; the tests hold the two to each other on generated inventories. Recorded runs still
plan with the planner, item by item, since each repository's plan becomes a deletion job.

The rules, as ``rules`` states them (first remove rule wins; any keep rule wins over it): a
tag expression is tested in Python, once per distinct tag list, and the lists that match go
back to the database in a table. The planner's rules, as ``deletion.planner`` states them:
- going: the selected items, and to a fixpoint the untagged children of going indexes whose
  every parent index is going and that are attached to nothing, and what is attached to going
  items (signatures, attestations, SBOMs, referrers, referrers lists: rows of the same
  repository whose subject is a going item's digest, not orphaned), whatever their tags;
- blocked: a selected or attached item that an index outside the going set references is
  kept, and so is an attached referrers list that lists something that stays; the going set
  is made again without them;
- kept: the blocked items, and the children of going indexes that do not go;
- the deletion order: by ``planner.order_key`` (what is attached to nothing, then what is
  attached to that, and so on; at each level indexes, then images, each by digest), but an
  item after the going indexes that list it and after the going item it is attached to;
- freed: a manifest's own blob when no other repository of the registry has its digest; a
  layer or config when every manifest referencing it is going in the same repository's plan.
  The inventory keeps both counts (``Manifest.digest_repositories``, ``Blob.manifest_count``),
  so each is a comparison, not a search; and, of each manifest, the bytes of the blobs it
  alone links to (``Manifest.sole_bytes``), so that the blobs one going manifest frees are a
  column of its row.
"""

import re
import secrets
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Sum

from hubmgr.deletion.graph import probing, values_subquery
from hubmgr.deletion.planner import (
    ATTACHED, CHILD, SELECTED, Graph, Node, blocked_reason, delete_order, order_key,
    own_tags_reason, shared_child_reason, staying_entries_reason, subject_stays_reason)
from hubmgr.deletion.protection import Protection
from hubmgr.inventory.catalog.conditions import (
    age_from_sql, older_than_sql, orphaned_sql, pulled_since_sql, pushed_before_sql,
    quiet_since_sql, seen_push_sql)
from hubmgr.inventory.models import Blob, IndexChild, Kind, Manifest, ManifestBlob, Repository
from hubmgr.patterns import tag_finder
from hubmgr.registry.artifacts import Artifact

from . import rules
from .reports import GoingItem, KeptEntry, ProtectedItem, RepositoryReport

REMOVE_CODES = {1: rules.REMOVE_TAG, 2: rules.REMOVE_UNTAGGED, 3: rules.REMOVE_STALE,
                4: rules.REMOVE_ORPHANED}
KEEP_BITS = ((1, rules.KEEP_LAST), (2, rules.KEEP_TAG), (4, rules.KEEP_PULLED),
             (16, rules.KEEP_PROTECTED))
REASONS = {0: SELECTED, 1: CHILD, 2: ATTACHED}
REASON_CODES = {reason: code for code, reason in REASONS.items()}

BLOCKED = 8  # a bit of ``keeps`` beside KEEP_BITS: selected, and kept by the planner
# ``keeps`` of an artifact attached to a going item that a protected-tag rule keeps (the
# cascade records it, kept: no round takes it again, and the report names the rule).
PROTECTED = 32

# The work tables, made afresh for each evaluation (hm_item by the selection itself). The SQL
# below names them as here; ``_q`` puts in this evaluation's names (see ``_tables``).
_WORK = {
    "hm_scope": "id bigint PRIMARY KEY",
    "hm_rm": "v text PRIMARY KEY",  # tag lists every tag of which the remove expression finds
    "hm_kp": "v text PRIMARY KEY",  # tag lists a tag of which the keep expression finds
    # Protected tags (deletion.protection): the tag lists each rule finds a tag of, and the
    # repositories where it applies. Read only when a rule exists (see _protected).
    "hm_pl": "v text, rule integer, PRIMARY KEY (v, rule)",
    "hm_pr": "repo bigint, rule integer, PRIMARY KEY (repo, rule)",
    # Each item a remove rule selects (reason 0, its first rule) with the keep rules that
    # protect it (bits of KEEP_BITS) or BLOCKED, and each child the cascade takes along
    # (reason 1, or 2 when attached, in its round). Going: keeps = 0. What it frees of its
    # own, whether it was read, whether it is a referrers list that was not selected
    # (is_list: it takes no children) and its digest are copied in, so that no statement
    # looks them up; its level: how many going subjects stand above it (planner.order_key);
    # and whether anything may be attached to it (attached, Manifest.has_attached).
    "hm_item": None,
    "hm_round": None,  # a round of the cascade's children, made by its statement
}
_WORK_NAME = re.compile(r"\b(" + "|".join(_WORK) + r")\b")
_names = ContextVar("setwise_names")
_scope = ContextVar("setwise_scope")  # a narrow scope's repository ids, else None (see _in_scope)

# PostgreSQL's settings while a dry run's statements run (see _tables): memory for each sort
# and hash (the default, 4 MB, spilled the joins and counts of a large selection to disk);
# parallel plans at no set-up cost (the planner's defaults kept every statement on one
# core: the work tables would not have allowed more anyway, as temporary tables); no JIT
# compilation, which cost these sub-second statements more than it saved; and no merge joins
# (over a tenth of a million-manifest registry, the blobs freed were found by walking every
# link between manifests and blobs in order and looking each blob up: 1.5 s instead of 0.3).
# The statements that start from the going rows (the cascade's rounds, the blobs freed, the
# first going rows, the kept rows) also run without hash joins (graph.probing): PostgreSQL
# hashed every index child, artifact, link or manifest of the registry where looking each
# going row up is faster. Over 100 of 1,000 repositories in a million-manifest registry: a
# round's artifacts 254 → 45 ms, the blobs freed 505 → 209 ms; over all 1,000, the artifacts
# 470 → 365 ms, the first going rows 1,006 → 449 ms, the kept rows 336 → under 200. (Not for
# every statement: keep-last's numbering has no index to look up.) And statistics of the work
# tables from a sample of 3,000 rows instead of 30,000: the statements want their sizes and
# the share of going rows, not fine histograms (the ANALYZE of hm_item over 100 repositories:
# 50 ms -> under 16, with the machine loaded).
PG_SETTINGS = {"work_mem": "128MB", "parallel_setup_cost": "0", "parallel_tuple_cost": "0",
               "jit": "off", "enable_mergejoin": "off", "default_statistics_target": "10"}

# Of a manifest row: whether it is unread, and the bytes deleting it frees whatever else
# goes: its own blob's when no other repository of the registry has its digest, and those of
# the blobs no other manifest links to (counts the triggers keep).
_UNREAD = "CASE WHEN {m}.fetched THEN 0 ELSE 1 END"
_OWN = ("(CASE WHEN {m}.digest_repositories = 1 THEN {m}.manifest_size ELSE 0 END "
        "+ {m}.sole_bytes)")
# Whether something may be attached to it (the triggers' hint): the cascade looks up what is
# attached only for these rows.
_ATTACHED_TO = "CASE WHEN {m}.has_attached THEN 1 ELSE 0 END"


def _q(sql):
    """``sql`` with the inventory's table names filled in, and this evaluation's work
    tables'. ``{C}`` after a digest orders it byte by byte, as Python does (PostgreSQL sorts
    by the database's collation otherwise, and sorts bytes faster; SQLite compares bytes
    anyway)."""
    quote = connection.ops.quote_name
    names = _names.get()
    return _WORK_NAME.sub(lambda found: names[found[1]], sql.format(**{
        name: quote(model._meta.db_table) for name, model in (
            ("m", Manifest), ("ic", IndexChild), ("mb", ManifestBlob), ("b", Blob))},
        C=' COLLATE "C"' if connection.vendor == "postgresql" else ""))


@contextmanager
def _tables():
    """A cursor inside a transaction (or a savepoint), with the work tables but hm_item made,
    empty; they are dropped afterwards, also inside an outer transaction that goes on.
    On an error the rollback takes them away (both databases undo DDL), and a failed
    PostgreSQL transaction would refuse the DROP anyway.

    SQLite: temporary tables. PostgreSQL: unlogged tables named for this evaluation alone,
    never committed, so that no other session sees them or waits on their names; unlike
    temporary tables, parallel workers may read them (what CREATE TABLE AS for hm_item needs
    to run in parallel), and PG_SETTINGS hold as long as the statements run. (On SQLite the
    transaction is IMMEDIATE, as every transaction here: dry runs take turns.)"""
    postgres = connection.vendor == "postgresql"
    token = _names.set({name: f"{name}_{secrets.token_hex(6)}" for name in _WORK})
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for name, columns in _WORK.items():
                if columns:
                    cursor.execute(_q(f"CREATE {_work_kind()} TABLE {name} ({columns})"))
            if postgres:
                cursor.execute("SELECT " + ", ".join(
                    f"current_setting('{name}'), set_config('{name}', %s, true)"
                    for name in PG_SETTINGS), list(PG_SETTINGS.values()))
                before = cursor.fetchone()[::2]
            yield cursor
            for name in _WORK:
                cursor.execute(_q(f"DROP TABLE IF EXISTS {name}"))
            if postgres:
                cursor.execute("SELECT " + ", ".join(
                    f"set_config('{name}', %s, true)" for name in PG_SETTINGS), before)
    finally:
        _names.reset(token)


@contextmanager
def _scoped(ids):
    token = _scope.set(ids)
    try:
        yield
    finally:
        _scope.reset(token)


def _narrow(repos) -> bool:
    """Whether ``repos`` hold less than a quarter of their registry's items, on PostgreSQL
    (see _in_scope)."""
    if connection.vendor != "postgresql" or not repos:
        return False
    total = Repository.objects.filter(registry_id=repos[0].registry_id).aggregate(
        n=Sum("item_count"))["n"] or 0
    return sum(repo.item_count for repo in repos) * 4 < total


def _in_scope(alias):
    """Whether the manifest ``alias`` is in a covered repository, as SQL for ``_q`` (braces
    doubled): a lookup in hm_scope (SQLite walks the repositories' index so), but on
    PostgreSQL, for a narrow scope (``_narrow``), the ids themselves (integers from the
    database), so that its planner knows how few rows they reach. Measured on 2,320,000
    manifests in 1,001 repositories: over 100 of them (4% of the items) it then reads the
    repository index and their pages (4,000) where the semi-join scanned the whole table twice
    (36,800 pages, once more for keep-last), 1,400 -> 600 ms in all; over 1,000 of them (43%)
    the ids made every dry run slower (hm_item's rows no longer in the table's order: the
    blobs freed 1.2 -> 2.5 s, 6.5 -> 8.8 s in all), so a wide scope keeps the semi-join."""
    ids = _scope.get()
    if ids is None or connection.vendor != "postgresql":
        return f"{alias}.repository_id IN (SELECT id FROM hm_scope)"
    ids = ",".join(str(int(i)) for i in ids)
    return f"{alias}.repository_id = ANY('{{{{{ids}}}}}'::bigint[])"


def _work_kind():
    return "UNLOGGED" if connection.vendor == "postgresql" else "TEMPORARY"


def _fill(cursor, table, values):
    if values:
        subquery, param = values_subquery(list(values), "text" if isinstance(
            next(iter(values)), str) else "bigint")
        cursor.execute(_q(f"INSERT INTO {table} SELECT value FROM ({subquery}) v"), [param])
        _analyze(cursor, table)


def _analyze(cursor, *tables):
    if connection.vendor == "postgresql":  # (no statistics on a work table otherwise)
        cursor.execute(_q(f"ANALYZE {', '.join(tables)}"))


def evaluate(policy, repos, now, coverage, limit) -> dict:
    """{repository id: its report (as ``runs.plan_repository`` makes it, each list holding at
    most ``limit`` entries)} for those of ``repos`` where the policy selects or protects
    something."""
    seen, seen_params = seen_push_sql("m")
    remove_tag = bool(policy.remove_tag_regex and policy.remove_tag_days is not None)
    stale = bool(policy.remove_stale and coverage.decides_stale)
    if not (remove_tag or policy.remove_untagged_days is not None or stale
            or policy.remove_orphans_days is not None):
        return {}
    by_id = {repo.pk: repo for repo in repos}
    protection = Protection.current()
    with _tables() as cursor, _scoped(list(by_id) if _narrow(repos) else None):
        _fill(cursor, "hm_scope", list(by_id))
        if remove_tag or policy.keep_tag_regex or protection:
            _match_tags(cursor, policy, remove_tag, protection, by_id)
        guarded = _protected if protection else None
        _select_items(cursor, policy, now, coverage, seen, seen_params, remove_tag, stale,
                      guarded)
        # (Statistics of the columns the later statements join and filter on: the digests'
        # took most of the ANALYZE's time, and no statement plans by them.)
        _analyze(cursor, "hm_item (id, repo, keeps, reason, round, is_index, is_list, level, "
                         "attached)")
        staying = cascade(cursor, guarded)
        return _reports(cursor, policy, by_id, limit, staying, protection)


def _match_tags(cursor, policy, remove_tag, protection, by_id):
    """The distinct tag lists of the covered tagged items, tested in Python (the expressions
    are RE2's, not the database's): those the remove expression finds in every tag of, those
    the keep expression finds in a tag of, and those a protected-tag rule finds a tag of
    (with the repositories where it applies). Protection reaches every tagged row (an
    attached artifact's too), the policy's own rules only top-level ones."""
    cursor.execute(_q(f"SELECT DISTINCT m.tags_text FROM {{m}} m WHERE {_in_scope('m')} "
                      "AND m.is_tagged" + ("" if protection else " AND m.is_top_level")))
    lists = [text for (text,) in cursor.fetchall()]
    if remove_tag:
        found = tag_finder(policy.remove_tag_regex)
        _fill(cursor, "hm_rm", [t for t in lists if all(map(found, t.split()))])
    if policy.keep_tag_regex:
        found = tag_finder(policy.keep_tag_regex)
        _fill(cursor, "hm_kp", [t for t in lists if any(map(found, t.split()))])
    if protection:
        for rule in protection.rules:  # (a few: a statement each)
            for table, values in (
                    ("hm_pl", [t for t in lists if any(map(rule.finds, t.split()))]),
                    ("hm_pr", [pk for pk, repo in by_id.items() if rule.covers(repo.name)])):
                if values:
                    subquery, param = values_subquery(
                        values, "text" if table == "hm_pl" else "bigint")
                    cursor.execute(_q(f"INSERT INTO {table} SELECT value, %s "
                                      f"FROM ({subquery}) v"), [rule.id, param])
        _analyze(cursor, "hm_pl", "hm_pr")


def _protected(alias):
    """Whether a protected-tag rule keeps the manifest ``alias``, in SQL."""
    return ("EXISTS (SELECT 1 FROM hm_pl pl JOIN hm_pr pr ON pr.rule = pl.rule "
            f"WHERE pl.v = {alias}.tags_text AND pr.repo = {alias}.repository_id)")


def _select_items(cursor, policy, now, coverage, seen, seen_params, remove_tag, stale,
                  guarded=None):
    """hm_item: each covered top-level item a remove rule selects, with its first such rule
    and the keep rules that protect it (bits of KEEP_BITS; a protected tag, where ``guarded``
    says so in SQL, is one). Keep-last's newest tagged items of each repository: by the push
    seen, else first seen, the digest breaking ties.

    The table is made by the selecting statement itself: PostgreSQL runs a CREATE TABLE AS
    in parallel, an INSERT never."""
    # An index is pulled when one of its images is (a pull by digest): its last pull is the
    # latest of its own and its children's.
    pulls = policy.keep_pulled_days is not None or stale
    child_pulled = ("CASE WHEN m.kind = %s THEN (SELECT MAX(cm.last_pulled) FROM {ic} c "
                    "JOIN {m} cm ON cm.id = c.child_id WHERE c.index_id = m.id) END"
                    if pulls else "NULL")
    pulled = ("(CASE WHEN t.child_pulled IS NULL THEN t.own_pulled WHEN t.own_pulled IS NULL "
              "OR t.child_pulled > t.own_pulled THEN t.child_pulled ELSE t.own_pulled END)")
    whens, params = [], []
    if policy.remove_orphans_days is not None:
        sql, cutoff = older_than_sql(now - timedelta(days=policy.remove_orphans_days),
                                     "t.seen", "t.pushed", "t.first_seen")
        whens.append(f"WHEN t.orphan AND {sql} THEN 4")
        params += cutoff
    if remove_tag:
        sql, cutoff = pushed_before_sql(now - timedelta(days=policy.remove_tag_days),
                                        "t.seen", "t.pushed")
        whens.append(f"WHEN t.tagged AND t.rm AND {sql} THEN 1")
        params += cutoff
    if policy.remove_untagged_days is not None:
        sql, cutoff = older_than_sql(now - timedelta(days=policy.remove_untagged_days),
                                     "t.seen", "t.pushed", "t.first_seen")
        whens.append(f"WHEN NOT t.tagged AND {sql} THEN 2")
        params += cutoff
    if stale:
        sql, cutoff = quiet_since_sql(coverage.cutoff, "t.seen", "t.pushed", pulled)
        whens.append(f"WHEN {sql} THEN 3")
        params += cutoff
    keeps = ["CASE WHEN t.newest THEN 1 ELSE 0 END", "CASE WHEN t.kp THEN 2 ELSE 0 END",
             "CASE WHEN t.guarded THEN 16 ELSE 0 END"]
    newest, newest_join, newest_params = "1 = 0", "", []
    if policy.keep_last:  # (numbered apart: a window over every column of the rows cost more)
        newest = "nw.id IS NOT NULL"
        age, age_params = age_from_sql("m")
        newest_join = (
            "LEFT JOIN (SELECT id FROM (SELECT m.id, ROW_NUMBER() OVER (PARTITION BY "
            f"m.repository_id ORDER BY {age} "
            "DESC NULLS LAST, m.digest{C} DESC) AS n "
            f"FROM {{m}} m WHERE {_in_scope('m')} "
            "AND m.is_top_level AND m.is_tagged) w WHERE n <= %s) nw ON nw.id = m.id")
        newest_params = [*age_params, policy.keep_last]
    if policy.keep_pulled_days is not None:
        sql, since = pulled_since_sql(now - timedelta(days=policy.keep_pulled_days), pulled)
        keeps.append(f"CASE WHEN {sql} THEN 4 ELSE 0 END")
        params += since
    orphan, orphan_params = orphaned_sql("m")
    cursor.execute(_q(
        f"CREATE {_work_kind()} TABLE hm_item AS SELECT CAST(id AS bigint) AS id, "
        "CAST(repo AS bigint) AS repo, "
        "CAST(rule AS integer) AS rule, CAST(keeps AS integer) AS keeps, 0 AS reason, "
        "0 AS round, CAST(is_index AS integer) AS is_index, "
        "CAST(unread AS integer) AS unread, CAST(own AS bigint) AS own, 0 AS is_list, "
        "digest, 0 AS level, CAST(attached AS integer) AS attached FROM ("
        f"SELECT t.id, t.repo, t.is_index, t.unread, t.own, t.digest, t.attached, "
        f"CASE {' '.join(whens)} END "
        f"AS rule, {' + '.join(keeps)} AS keeps FROM ("
        "SELECT m.id, m.repository_id AS repo, m.digest, "
        "CASE WHEN m.kind = %s THEN 1 ELSE 0 END "
        f"AS is_index, m.is_tagged AS tagged, {seen} AS seen, {orphan} AS orphan, "
        "m.last_pushed AS pushed, m.first_seen, m.last_pulled AS own_pulled, "
        f"{child_pulled} AS child_pulled, rm.v IS NOT NULL AS rm, kp.v IS NOT NULL AS kp, "
        f"{newest} AS newest, {_UNREAD.format(m='m')} AS unread, "
        f"{guarded('m') if guarded else '1 = 0'} AS guarded, "
        f"{_OWN.format(m='m')} AS own, {_ATTACHED_TO.format(m='m')} AS attached "
        "FROM {m} m LEFT JOIN hm_rm rm ON rm.v = m.tags_text "
        f"LEFT JOIN hm_kp kp ON kp.v = m.tags_text {newest_join} "
        f"WHERE {_in_scope('m')} AND m.is_top_level) t) u "
        "WHERE rule IS NOT NULL"),
        [*params, Kind.INDEX.value, *seen_params, *orphan_params,
         *([Kind.INDEX.value] if pulls else []),
         *newest_params])
    item = _names.get()["hm_item"]
    cursor.execute(f"CREATE UNIQUE INDEX {item}_id ON {item} (id)")
    if connection.vendor == "sqlite":  # (PostgreSQL reads the table whole for each round)
        # Each round of the cascade starts from the rows the round before added.
        cursor.execute(f"CREATE INDEX {item}_round ON {item} (round)")


_NOT_GOING = "NOT EXISTS (SELECT 1 FROM hm_item y WHERE y.id = {} AND y.keeps = 0)"
# Attached to a subject in its repository (``Manifest.is_attached``): it goes with its subject
# only, never as an index's child. Every condition on subject is spelled NOT (x.subject = ''),
# the m_subject index's own: SQLite uses a partial index only for a query that states its
# condition as written (with subject <> '' each round of the cascade read the whole table).
_ATTACHED = "(NOT ({m}.subject = '') AND NOT {m}.is_orphan)"
# A row of hm_item made by the cascade (columns in hm_item's order), of the manifest ``a``.
_CASCADED = ("{a}.id, {a}.repository_id AS repo, 0 AS rule, {keeps} AS keeps, "
             "{reason} AS reason, "
             "CAST(%s AS integer) AS round, CASE WHEN {a}.kind = %s THEN 1 ELSE 0 END "
             "AS is_index, " + _UNREAD.replace("{m}", "{a}") + " AS unread, "
             + _OWN.replace("{m}", "{a}") + " AS own, "
             "CASE WHEN {a}.referrers_list THEN 1 ELSE 0 END AS is_list, {a}.digest, "
             "{level} AS level, " + _ATTACHED_TO.replace("{m}", "{a}") + " AS attached")


# The referrers lists going with their subject (or as an index's child).
_GOING_LISTS = "(SELECT id FROM hm_item WHERE keeps = 0 AND is_list = 1)"


def cascade(cursor, guarded=None) -> dict:
    """The cascade and the blocked items in hm_item, as the planner makes its going set:
    round by round, the untagged children of the indexes that went in the round before
    whose every parent index goes (none of a referrers list that was not selected), and the
    artifacts attached to what went in the round
    before (to any depth: a signature of an attestation), kept (PROTECTED) where ``guarded``
    says a protected-tag rule keeps them. Returns {id of a kept referrers
    list: the digests it lists that stay, in its order}."""
    attached_keeps = (f"CASE WHEN {guarded('a')} THEN {PROTECTED} ELSE 0 END" if guarded
                      else "0")
    may_block, staying = None, {}
    while True:
        round_ = 0
        while True:
            round_ += 1
            # Made as a table first, since PostgreSQL runs a CREATE TABLE AS in parallel and
            # an INSERT never; from the rows that went last round (SQLite: as the outer loop,
            # not a scan of every index child and every artifact of the registry each round),
            # and only then without what hm_item holds (the fence, OFFSET 0: PostgreSQL
            # misjudged that anti-join and planned every IndexChild row through it).
            with probing():
                cursor.execute(_q(
                    f"CREATE {_work_kind()} TABLE hm_round AS SELECT * FROM (SELECT * FROM ("
                    "SELECT DISTINCT "
                    + _CASCADED.format(a="cm", reason=REASON_CODES[CHILD], level=0, keeps=0)
                    + " FROM hm_item g CROSS JOIN {ic} c CROSS JOIN {m} cm "
                    "WHERE c.index_id = g.id AND cm.id = c.child_id "
                    "AND g.round = %s AND g.keeps = 0 AND g.is_index = 1 AND NOT cm.is_tagged "
                    f"AND NOT {_ATTACHED.format(m='cm')} AND g.is_list = 0 "
                    "AND NOT EXISTS (SELECT 1 FROM {ic} p WHERE p.child_id = c.child_id AND "
                    + _NOT_GOING.format("p.index_id") + f") {_fence()}) children UNION ALL "
                    "SELECT * FROM (SELECT "
                    + _CASCADED.format(a="a", reason=REASON_CODES[ATTACHED],
                                       level="g.level + 1", keeps=attached_keeps)
                    + " FROM hm_item g CROSS JOIN {m} a "
                    "WHERE a.repository_id = g.repo AND a.subject = g.digest "
                    "AND g.round = %s AND g.keeps = 0 AND g.attached = 1 "
                    "AND NOT (a.subject = '') "
                    "AND NOT a.is_orphan "
                    f"{_fence()}) attached) x "
                    "WHERE NOT EXISTS (SELECT 1 FROM hm_item y WHERE y.id = x.id)"),
                    [round_, Kind.INDEX.value, round_ - 1, round_, Kind.INDEX.value, round_ - 1])
            cursor.execute(_q("INSERT INTO hm_item SELECT * FROM hm_round"))
            added = cursor.rowcount
            cursor.execute(_q("DROP TABLE hm_round"))
            if added <= 0:
                break
        if may_block is None:  # a selected or attached row an index lists; a referrers list
            cursor.execute(_q(
                "SELECT 1 FROM hm_item i JOIN {ic} p ON p.child_id = i.id WHERE i.keeps = 0 "
                f"AND i.reason <> {REASON_CODES[CHILD]} UNION ALL SELECT 1 FROM hm_item "
                "WHERE keeps = 0 AND is_list = 1"))
            may_block = cursor.fetchone() is not None
        if not may_block:
            return staying
        # A referrers list that goes with its subject but lists something that stays is kept,
        # and what it lists that stays is named (as found the first time).
        for list_id, digest in _rows(cursor, (
                "SELECT c.index_id, cm.digest FROM {ic} c JOIN {m} cm ON cm.id = c.child_id "
                f"WHERE c.index_id IN {_GOING_LISTS} AND " + _NOT_GOING.format("c.child_id")
                + " ORDER BY c.index_id, c.id")):
            staying.setdefault(list_id, []).append(digest)
        # A selected or attached row that an index outside the going set references is kept
        # (a child joins only when all its parents go), and so is such a referrers list; the
        # cascade is made again without them. A kept row stays in hm_item, so that no round
        # takes it again. (Found first, then marked: all against the same going set. SQLite's
        # UPDATE would see the rows it has marked already.)
        found = [i for (i,) in _rows(cursor, (
            f"SELECT id FROM hm_item WHERE keeps = 0 AND reason <> {REASON_CODES[CHILD]} "
            "AND EXISTS (SELECT 1 FROM {ic} p WHERE p.child_id = hm_item.id AND "
            + _NOT_GOING.format("p.index_id") + ") UNION SELECT c.index_id FROM {ic} c "
            f"WHERE c.index_id IN {_GOING_LISTS} AND " + _NOT_GOING.format("c.child_id")))]
        if not found:
            return staying
        subquery, param = values_subquery(found, "bigint")
        cursor.execute(_q(f"UPDATE hm_item SET keeps = {BLOCKED} WHERE id IN ({subquery})"),
                       [param])
        cursor.execute(_q("DELETE FROM hm_item WHERE reason <> 0 AND keeps = 0"))


def _fence():
    """What keeps PostgreSQL from flattening a subquery into the query around it (SQLite
    plans these statements well as they are, and wants a LIMIT before an OFFSET)."""
    return "OFFSET 0" if connection.vendor == "postgresql" else ""


def _per_repo(cursor, sql, params=()):
    cursor.execute(_q(sql), list(params))
    return {row[0]: row[1:] for row in cursor.fetchall()}


def _reports(cursor, policy, by_id, limit, staying,
             protection=None) -> dict[int, RepositoryReport]:
    # Of each repository: selected (going or blocked) and protected items; going items, those
    # selected, unread ones and the bytes of their own that they free.
    counted = _per_repo(cursor, (
        f"SELECT repo, SUM(CASE WHEN reason = 0 AND {_SELECTED} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN reason = 0 AND NOT {_SELECTED} THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN keeps = 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN keeps = 0 AND reason = 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN keeps = 0 THEN unread ELSE 0 END), "
        "SUM(CASE WHEN keeps = 0 THEN own ELSE 0 END), "
        f"SUM(CASE WHEN keeps = 0 AND reason = {REASON_CODES[CHILD]} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN keeps = 0 AND reason = {REASON_CODES[ATTACHED]} THEN 1 ELSE 0 END) "
        "FROM hm_item GROUP BY repo"))
    items = {repo_id: row[:2] for repo_id, row in counted.items()}
    if not items:
        return {}
    going = {repo_id: row[2:] for repo_id, row in counted.items() if row[2]}
    with probing():
        blobs = _per_repo(cursor, _FREED_BLOBS, [max((row[0] for row in going.values()),
                                                      default=0)])
    subquery, param = values_subquery(list(items), "bigint")
    totals = _per_repo(cursor, f"SELECT m.repository_id, COUNT(*) FROM ({subquery}) v "
                               "CROSS JOIN {m} m WHERE m.repository_id = v.value "
                               "AND m.is_top_level GROUP BY m.repository_id", [param])
    unread = {repo_id: int(row[2] or 0) for repo_id, row in going.items()}
    lists = _lists(cursor, limit, unread, staying, by_id, protection) if limit else {}
    kept = ({repo_id: (listed["kept_count"],) for repo_id, listed in lists.items()
             if "kept_count" in listed} if limit else
            _per_repo(cursor, "SELECT repo, COUNT(*) FROM (" + _KEPT + ") k GROUP BY repo"))
    reports = {}
    for repo_id, (selected, protected) in items.items():
        n_going, n_selected, n_unread, manifest_bytes, n_children, n_attached = going.get(
            repo_id, (0, 0, 0, 0, 0, 0))
        total = totals.get(repo_id, (0,))[0]
        listed = lists.get(repo_id, {})
        reports[repo_id] = RepositoryReport(
            repository=by_id[repo_id].name,
            items=total,
            selected=selected,
            going=listed.get("going", []),
            protected=listed.get("protected", []),
            kept=listed.get("kept", []),
            reclaim_bytes=int(manifest_bytes or 0) + int(blobs.get(repo_id, (0,))[0] or 0),
            unread=listed.get("unread", []),
            brake=rules.brake_reason(policy, n_selected, total) if selected else None,
            going_count=n_going,
            going_items=int(n_selected or 0),
            going_children=int(n_children or 0),
            going_attached=int(n_attached or 0),
            protected_count=protected,
            kept_count=kept.get(repo_id, (0,))[0],
            unread_count=int(n_unread or 0),
        )
    return reports


_SELECTED = f"keeps IN (0, {BLOCKED})"  # (of reason 0)

# Kept: the blocked items, the protected artifacts of going items, and the children of going
# indexes that do not go.
_KEPT = ("SELECT g.repo, c.child_id AS id FROM hm_item g JOIN {ic} c ON c.index_id = g.id "
         "WHERE g.keeps = 0 AND g.is_index = 1 AND " + _NOT_GOING.format("c.child_id")
         + f" UNION SELECT repo, id FROM hm_item WHERE keeps IN ({BLOCKED}, {PROTECTED})")

# A layer or config is freed when every manifest referencing it is going in this
# repository's plan: when as many of them go as the count the inventory's triggers keep. A
# blob one manifest references is in that manifest's ``own`` (Manifest.sole_bytes); one that
# several reference is grouped here, found from the blobs referenced at most as often as a
# repository has going items (%s; a base layer that many repositories share is never a
# candidate).
_FREED_BLOBS = (
    "SELECT x.repo, SUM(b.size) FROM (SELECT g.repo, l.blob_id, COUNT(*) AS n "
    "FROM {b} s JOIN {mb} l ON l.blob_id = s.id JOIN hm_item g ON g.id = l.manifest_id "
    "WHERE s.manifest_count BETWEEN 2 AND %s AND g.keeps = 0 GROUP BY g.repo, l.blob_id) x "
    "JOIN {b} b ON b.id = x.blob_id WHERE b.manifest_count = x.n GROUP BY x.repo")


def _lists(cursor, limit, unread, staying, by_id, protection) -> dict:
    """{repository id: {"going", "protected", "kept", "unread": the first ``limit`` entries,
    in the planner's order}}. ``unread``: {repository id: how many of its going items are
    unread}; ``staying``: what ``cascade`` found each kept referrers list to list that stays."""
    lists = {}
    cursor.execute(_q(
        "SELECT repo, digest, tags_text, rule, keeps FROM (SELECT i.repo, m.digest, "
        "m.tags_text, i.rule, i.keeps, ROW_NUMBER() OVER (PARTITION BY i.repo "
        "ORDER BY m.digest{C}) AS n FROM hm_item i JOIN {m} m ON m.id = i.id "
        f"WHERE i.reason = 0 AND NOT i.{_SELECTED}) t WHERE n <= %s ORDER BY repo, n"), [limit])
    for repo_id, digest, tags, rule, keeps in cursor.fetchall():
        lists.setdefault(repo_id, {}).setdefault("protected", []).append(ProtectedItem(
            digest=digest, tags=tags.split(), rule=REMOVE_CODES[rule],
            keep=[name for bit, name in KEEP_BITS if keeps & bit]))
    going = _going_rows(cursor, limit, unread)
    parents = _going_parents(cursor, [row[0] for rows in going.values() for row in rows])
    for repo_id, rows in going.items():
        positions = {row[0]: n for n, row in enumerate(rows)}
        digests = {row[0]: row[1] for row in rows}
        entries = lists.setdefault(repo_id, {})["going"] = []
        for row in rows[:limit]:
            manifest_id, digest, kind, tags, size, reason, rule = row[:7]
            of = parents.get(manifest_id, ())  # in the order of the plan
            entry = GoingItem(
                digest=digest, type=kind, tags=tags.split(), size=size,
                reason=REASONS[reason],
                parents=[digests[p] for p in (sorted(of, key=positions.get)
                                              if len(of) > 1 else of)],
                rule=REMOVE_CODES[rule] if reason == 0 else None)
            _describe(entry, row)
            entries.append(entry)
        lists[repo_id]["unread"] = [row[1] for row in rows if not row[7]][:limit]
    for repo_id, (entries, count) in _kept_rows(cursor, limit, staying, by_id,
                                                protection).items():
        lists.setdefault(repo_id, {}).update(kept=entries, kept_count=count)
    return lists


# A going row's columns (after its repository's id): what a report lists of it, then what
# says what it is (as the deletion graph reads them) and, for the order, what it is attached to.
_GOING_COLUMNS = ("g.id, m.digest, m.kind, m.tags_text, m.size, g.reason, g.rule, m.fetched, "
                  "m.artifact, m.artifact_type, m.tool, m.subject, m.referrers_list, "
                  "m.is_orphan, g.level")


def _describe(entry, row):
    """What ``actions.plan_data`` adds to a going item: what an artifact (or a referrers list)
    is and who made it, and what an attached one goes with."""
    kind, artifact, artifact_type, tool, subject, listed = (row[2], *row[8:13])
    if artifact or listed:
        entry["artifact"] = Artifact(artifact or kind, artifact_type, tool, subject,
                                     bool(listed)).label
        entry["tool"] = tool
    if REASONS[row[5]] == ATTACHED:
        entry["subject"] = subject


def _going_rows(cursor, limit, unread) -> dict:
    """{repository id: its going rows (``_GOING_COLUMNS``) in the planner's deletion order}:
    the first ``limit``, and as many more as the unread list needs. The order is
    ``planner.order_key``'s, except that a row comes after the going indexes that list it
    (``planner.delete_order``; the item it is attached to is a level above it): where one of
    these sorts after it (an index listed by another of its level and a later digest, an
    attached index listing what is attached to nothing), the order is the planner's own,
    over the first rows and what comes before them."""
    reordered = set(r for (r,) in _rows(cursor, (
        "SELECT DISTINCT g.repo FROM hm_item p CROSS JOIN {ic} c CROSS JOIN hm_item g "
        "WHERE p.level > 0 AND p.is_index = 1 AND p.keeps = 0 AND c.index_id = p.id "
        "AND g.id = c.child_id AND g.keeps = 0 AND g.level < p.level UNION "
        "SELECT DISTINCT g.repo FROM hm_item g CROSS JOIN {ic} c CROSS JOIN hm_item p "
        "WHERE g.is_index = 1 AND g.keeps = 0 AND c.child_id = g.id AND p.id = c.index_id "
        "AND p.keeps = 0 AND p.level = g.level AND p.digest{C} > g.digest")))
    found = {}
    # The first ``limit`` of each repository, and its first ``limit`` unread ones: numbered
    # in hm_item, read from the inventory only for those. (The LIMIT, as many rows as they can
    # be, tells PostgreSQL how few they are: it takes a window's condition to keep every row,
    # and would join every going row with the inventory.)
    for where in (("WHERE g.keeps = 0", "WHERE g.keeps = 0 AND g.unread = 1")
                  if any(unread.values()) else ("WHERE g.keeps = 0",)):
        with probing():
            found_rows = _rows(cursor, (
                f"SELECT g.repo, {_GOING_COLUMNS} FROM (SELECT id, repo, reason, rule, level "
                "FROM (SELECT g.*, ROW_NUMBER() OVER (PARTITION BY g.repo ORDER BY g.level, "
                f"g.is_index DESC, g.digest{{C}}) AS n FROM hm_item g {where}) w "
                "WHERE w.n <= %s LIMIT %s) g CROSS JOIN {m} m WHERE m.id = g.id"),
                [limit, limit * max(len(unread), 1)])
        for row in found_rows:
            if row[0] not in reordered or "unread" not in where:
                found.setdefault(row[0], {})[row[1]] = row[1:]
    ordered = {}
    for repo_id, rows in found.items():
        if repo_id not in reordered:
            ordered[repo_id] = sorted(rows.values(), key=lambda r: order_key(r[14], r[2], r[1]))
    if reordered:
        prefixes = _delete_order(cursor, {r: found.get(r, {}) for r in reordered})
        whole = []  # where the prefix holds fewer unread rows than the unread list needs
        for repo_id, rows in prefixes.items():
            if sum(not row[7] for row in rows) < min(limit, unread.get(repo_id, 0)):
                whole.append(repo_id)
            else:
                ordered[repo_id] = rows
        if whole:
            subquery, param = values_subquery(sorted(whole), "bigint")
            rows = {}
            for row in _rows(cursor, f"SELECT g.repo, {_GOING_COLUMNS} FROM hm_item g "
                                     f"JOIN {{m}} m ON m.id = g.id JOIN ({subquery}) v "
                                     "ON v.value = g.repo WHERE g.keeps = 0",
                             [param]):
                rows.setdefault(row[0], {})[row[1]] = row[1:]
            ordered.update(_delete_order(cursor, rows))
    return ordered


def _delete_order(cursor, rows) -> dict:
    """{repository id: its going rows in the order ``planner.delete_order`` gives them}, from
    ``rows`` ({repository id: {id: row}}: its first rows in sorted order, or all of them) and
    the going rows that come before them (the going indexes that list them and the going items
    they are attached to, to any depth): a prefix of the plan's order with every given row."""
    rows = {repo_id: dict(found) for repo_id, found in rows.items()}
    todo = [i for found in rows.values() for i in found]
    while todo:
        subquery, param = values_subquery(todo, "bigint")
        above = [i for (i,) in _rows(cursor, (
            f"SELECT c.index_id FROM ({subquery}) v CROSS JOIN {{ic}} c "
            "JOIN hm_item p ON p.id = c.index_id WHERE c.child_id = v.value AND p.keeps = 0 "
            f"UNION SELECT s.id FROM ({subquery}) v CROSS JOIN {{m}} gm "
            "JOIN {m} sm ON sm.repository_id = gm.repository_id AND sm.digest = gm.subject "
            "JOIN hm_item s ON s.id = sm.id WHERE gm.id = v.value AND NOT (gm.subject = '') "
            "AND NOT gm.is_orphan AND s.keeps = 0"), [param, param])]
        known = {i for found in rows.values() for i in found}
        todo = sorted(set(above) - known)
        if todo:
            subquery, param = values_subquery(todo, "bigint")
            for row in _rows(cursor, f"SELECT g.repo, {_GOING_COLUMNS} FROM ({subquery}) v "
                                     "CROSS JOIN hm_item g JOIN {m} m ON m.id = g.id "
                                     "WHERE g.id = v.value", [param]):
                rows.setdefault(row[0], {})[row[1]] = row[1:]
    parents = _going_parents(cursor, [i for found in rows.values() for i in found])
    ordered = {}
    for repo_id, found in rows.items():
        children = {}
        for child in found:
            for parent in parents.get(child, ()):
                children.setdefault(parent, []).append(("", found[child][1]))
        digests = {row[1] for row in found.values()}
        graph = Graph({("", row[1]): Node(
            key=("", row[1]), kind=row[2], children=tuple(children.get(row[0], ())),
            subject=row[11] if row[11] in digests and not row[13] else "")
            for row in found.values()}, {})
        by_digest = {row[1]: row for row in found.values()}
        ordered[repo_id] = [by_digest[key[1]] for key in delete_order(graph, graph.nodes)]
    return ordered


def _going_parents(cursor, ids) -> dict:
    """{id: ids of the going indexes referencing it} for the going ``ids``."""
    parents = {}
    if ids:
        subquery, param = values_subquery(ids, "bigint")
        for child, index in _rows(cursor, (
                f"SELECT c.child_id, c.index_id FROM ({subquery}) v CROSS JOIN {{ic}} c "
                "WHERE c.child_id = v.value AND EXISTS (SELECT 1 FROM hm_item y "
                "WHERE y.id = c.index_id AND y.keeps = 0)"), [param]):
            parents.setdefault(child, []).append(index)
    return parents


def _kept_rows(cursor, limit, staying, by_id, protection) -> dict:
    """{repository id: (the first ``limit`` kept entries by digest, each with the planner's
    reason; how many are kept in all)}; ``protection`` names the rule that keeps a protected
    artifact (of a repository in ``by_id``)."""
    with probing():
        rows = _rows(cursor, (
            "SELECT k.repo, k.id, m.digest, m.tags_text, (SELECT b.keeps FROM hm_item b "
            f"WHERE b.id = k.id AND b.keeps IN ({BLOCKED}, {PROTECTED})), k.total, sm.digest, "
            "sm.tags_text "
            "FROM (SELECT repo, id, "
            "ROW_NUMBER() OVER (PARTITION BY repo ORDER BY digest{C}) AS n, COUNT(*) OVER "
            "(PARTITION BY repo) AS total FROM (SELECT u.repo, u.id, m.digest "
            "FROM (" + _KEPT + ") u "
            "JOIN {m} m ON m.id = u.id) w) k JOIN {m} m ON m.id = k.id "
            # What it is attached to (not an orphan's subject: that is not in the repository).
            "LEFT JOIN {m} sm ON sm.repository_id = m.repository_id AND sm.digest = m.subject "
            "AND NOT (m.subject = '') AND NOT m.is_orphan WHERE k.n <= %s "
            "ORDER BY k.repo, m.digest{C}"), [limit])
    if not rows:
        return {}
    ids = [row[1] for row in rows]
    subquery, param = values_subquery(ids, "bigint")
    outside = {}  # id -> [(digest, tags) of the indexes outside the going set referencing it]
    for child, digest, tags in _rows(cursor, (
            f"SELECT c.child_id, m.digest, m.tags_text FROM ({subquery}) v CROSS JOIN {{ic}} c "
            "JOIN {m} m ON m.id = c.index_id WHERE c.child_id = v.value AND "
            + _NOT_GOING.format("c.index_id") + " ORDER BY m.digest{C}"), [param]):
        outside.setdefault(child, []).append((digest, tags.split()))
    kept = {}
    for repo_id, manifest_id, digest, tags, keeps, total, subject, subject_tags in rows:
        tags, indexes = tags.split(), outside.get(manifest_id, [])
        if keeps == PROTECTED:
            reason = protection.protects(by_id[repo_id].name, tags)
        elif keeps == BLOCKED:
            reason = (blocked_reason(indexes) if indexes
                      else staying_entries_reason(staying[manifest_id]))
        elif tags:
            reason = own_tags_reason(tags)
        elif indexes or subject is None:
            reason = shared_child_reason(indexes)
        else:
            reason = subject_stays_reason((subject, tuple(subject_tags.split())))
        kept.setdefault(repo_id, ([], total))[0].append(
            KeptEntry(digest=digest, reason=reason, tags=tags))
    return kept


def _rows(cursor, sql, params=()):
    cursor.execute(_q(sql), list(params))
    return cursor.fetchall()
