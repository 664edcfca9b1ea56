#!/usr/bin/env bash
# `make bench`: every figure on SQLite, then again on PostgreSQL when a server answers at
# 127.0.0.1:5432 with trust auth, in a database made afresh for the run (hubmgr_bench;
# HUBMGR_BENCH_POSTGRES_URL points elsewhere). Extra arguments are ignored; BENCH_ONLY picks
# one section (see bench/run.py).
set -euo pipefail
PY=.venv/bin/python
pg_url="${HUBMGR_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/hubmgr_bench}"

echo "== bench on SQLite"
BENCH_DATABASE_URL= "$PY" bench/run.py

if "$PY" - "$pg_url" <<'PYFRESH' 2>/dev/null; then
import sys
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

u = urlsplit(sys.argv[1])
name = u.path.lstrip("/")
with psycopg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                     password=u.password, dbname="postgres", connect_timeout=3,
                     autocommit=True) as conn:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PYFRESH
  echo "== bench on PostgreSQL ($pg_url)"
  BENCH_DATABASE_URL="$pg_url" "$PY" bench/run.py
else
  echo "== PostgreSQL bench skipped: no server answered at $pg_url"
fi
