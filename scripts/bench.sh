#!/usr/bin/env bash
# `make bench`: every figure on SQLite, then again on PostgreSQL when a server answers at
# 127.0.0.1:5432 with trust auth, in a database made afresh for the run (hubmgr_bench;
# HUBMGR_BENCH_POSTGRES_URL points elsewhere). Figures are printed and written to
# bench/output/results.json; then bench/doc_table.py rewrites the latest-figures table of
# docs/benchmarks.md from it (benchmarks not run keep their rows). PostgreSQL measures
# 1,000,000 manifests (BENCH_PG_MANIFESTS), SQLite 100,000 (BENCH_MANIFESTS). BENCH_ONLY picks
# sections (see bench/run.py); BENCH_KEEP=1 keeps the PostgreSQL database afterwards and prints
# its URL. Extra arguments are ignored.
set -euo pipefail
PY=.venv/bin/python
pg_url="${HUBMGR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/hubmgr_bench}"
export BENCH_RUN_ID="${BENCH_RUN_ID:-$(date +%s)-$$}"

pg_admin() {  # pg_admin create|drop: the benchmark database, through the maintenance db
  "$PY" - "$pg_url" "$1" <<'PYADMIN' 2>/dev/null
import sys
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

u = urlsplit(sys.argv[1])
name = u.path.lstrip("/")
with psycopg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                     password=u.password, dbname="postgres", connect_timeout=3,
                     autocommit=True) as conn:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    if sys.argv[2] == "create":
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PYADMIN
}

if [ -z "${BENCH_SKIP_SQLITE:-}" ]; then
  echo "== bench on SQLite"
  BENCH_DATABASE_URL= "$PY" bench/run.py
fi

if pg_admin create; then
  echo "== bench on PostgreSQL ($pg_url)"
  BENCH_DATABASE_URL="$pg_url" BENCH_MANIFESTS="${BENCH_PG_MANIFESTS:-1000000}" \
    "$PY" bench/run.py
  if [ -n "${BENCH_KEEP:-}" ]; then
    echo "BENCH_DATABASE_URL=$pg_url"
  else
    pg_admin drop
  fi
else
  echo "== PostgreSQL bench skipped: no server answered at $pg_url"
fi
echo "figures: bench/output/results.json"
"$PY" bench/doc_table.py
