#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL + pgvector server on 127.0.0.1 (for the database
# gallery's tests): installs the PyPI wheel `pgserver` (PostgreSQL 16 with pgvector) into
# .pg-venv/ if absent, starts a server in a temporary folder with a free port, exports
# PROXIMA_TEST_PG_URL / PROXIMA_TEST_PG_CTL / PROXIMA_TEST_PG_DIR, runs the command, and stops
# and deletes the server afterwards. When the server cannot be installed or started, it says so
# and runs the command without those variables (the database tests then print why they skip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.pg-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import pgserver" 2>/dev/null; then
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "pgserver==0.1.4"; }; then
        echo "with-postgres: cannot install pgserver from PyPI; database tests will skip" >&2
        exec "$@"
    fi
fi
if ! exports="$("$venv/bin/python" -W ignore "$root/scripts/pg_test_server.py" start)"; then
    echo "with-postgres: cannot start PostgreSQL; database tests will skip" >&2
    exec "$@"
fi
eval "$exports"
trap '"$venv/bin/python" -W ignore "$root/scripts/pg_test_server.py" stop "$PROXIMA_TEST_PG_DIR"' EXIT
echo "with-postgres: PostgreSQL + pgvector at $PROXIMA_TEST_PG_URL" >&2
"$@"
