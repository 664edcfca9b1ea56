#!/usr/bin/env bash
# The whole suite on SQLite, then again on PostgreSQL when a server answers at
# 127.0.0.1:5432 with trust auth (override with HUBMGR_TEST_POSTGRES_URL).
set -euo pipefail
PY=.venv/bin/python
pg_url="${HUBMGR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/hubmgr}"

echo "== test suite on SQLite"
HUBMGR_DATABASE_URL= "$PY" -m pytest "$@"

if "$PY" - "$pg_url" <<'PYCHECK' 2>/dev/null; then
import sys
import psycopg
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
psycopg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                password=u.password, dbname="postgres", connect_timeout=3).close()
PYCHECK
  echo "== test suite on PostgreSQL ($pg_url)"
  HUBMGR_DATABASE_URL="$pg_url" "$PY" -m pytest "$@"
else
  echo "== PostgreSQL run skipped: no server answered at $pg_url (set HUBMGR_TEST_POSTGRES_URL to point at one)"
fi
