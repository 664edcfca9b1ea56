#!/usr/bin/env bash
# `make test`: the whole suite on SQLite and, when a server answers at 127.0.0.1:5432 with trust
# auth (override with HUBMGR_TEST_POSTGRES_URL), again on PostgreSQL. The two passes run at the
# same time, each spread over HUBMGR_TEST_WORKERS pytest-xdist workers (default 2): every worker
# has its own test database (pytest-django suffixes the name with _gw0, _gw1...) and its own
# private Redis, registries and Chromium. Each pass's output is printed whole when it ends,
# closing with pytest's summary line ("N passed ..."); the script fails when a pass fails or
# runs no test at all (pytest's exit status 5). The tests that use no database run in the
# SQLite pass only (--db-tests-only on the other). Extra arguments go to both pytest runs.
set -uo pipefail
PY=.venv/bin/python
pg_url="${HUBMGR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/hubmgr}"
logs=test-output
mkdir -p "$logs"

if "$PY" - "$pg_url" <<'PYCHECK' 2>/dev/null; then
import sys
import psycopg
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
psycopg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                password=u.password, dbname="postgres", connect_timeout=3).close()
PYCHECK
  passes=(sqlite postgresql)
else
  passes=(sqlite)
fi

declare -A workers=([sqlite]="${HUBMGR_TEST_WORKERS:-2}" [postgresql]="${HUBMGR_TEST_WORKERS:-2}")
# The tests that use no database run once, in the SQLite pass (which always runs): the same
# test on PostgreSQL would only repeat it. The PostgreSQL log ends with how many it left out.
declare -A only=([sqlite]="" [postgresql]="--db-tests-only")
declare -A url=([sqlite]="" [postgresql]="$pg_url") title=([sqlite]="SQLite"
    [postgresql]="PostgreSQL ($pg_url)") pid=() status=()
for name in "${passes[@]}"; do
  HUBMGR_DATABASE_URL="${url[$name]}" "$PY" -m pytest -n "${workers[$name]}" --dist loadgroup \
    ${only[$name]} "$@" >"$logs/$name.log" 2>&1 &
  pid[$name]=$!
done

failed=0
for name in "${passes[@]}"; do
  wait "${pid[$name]}"
  status[$name]=$?
  echo "== test suite on ${title[$name]} (log: $logs/$name.log)"
  cat "$logs/$name.log"
  if [ "${status[$name]}" -ne 0 ]; then
    echo "== the ${title[$name]} pass FAILED (pytest exit status ${status[$name]})"
    failed=1
  fi
done
if [ "${#passes[@]}" -eq 1 ]; then
  echo "== PostgreSQL run skipped: no server answered at $pg_url (set HUBMGR_TEST_POSTGRES_URL to point at one)"
fi
exit "$failed"
