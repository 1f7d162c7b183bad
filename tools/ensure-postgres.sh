#!/usr/bin/env bash
# Make the local PostgreSQL reachable for the test suite: start it if it is installed
# but stopped. Prints what it found; never fails the build by itself (the tests decide).
set -u
host=${TRM_TEST_POSTGRES_HOST:-127.0.0.1}
port=${TRM_TEST_POSTGRES_PORT:-5432}
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL client tools not installed; PostgreSQL tests will not run."
  exit 0
fi
if ready; then
  echo "ensure-postgres: PostgreSQL is reachable at $host:$port."
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    echo "ensure-postgres: starting PostgreSQL $version (main)..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1 || true
  done
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
if ready; then
  echo "ensure-postgres: PostgreSQL is reachable at $host:$port."
else
  echo "ensure-postgres: PostgreSQL is not reachable at $host:$port."
fi
