#!/usr/bin/env bash
# Make Debian's wrk available for `make bench` (bench/accept.py drives it): install it with
# apt-get if it is missing. Prints what it found; never fails by itself (the bench says it
# cannot measure throughput without wrk, and exits non-zero).
set -u
tool=${TRM_BENCH_WRK:-wrk}
if ! command -v "$tool" >/dev/null 2>&1; then
  "$(dirname "$0")/apt-install.sh" ensure-wrk wrk
fi
if command -v "$tool" >/dev/null 2>&1; then
  echo "ensure-wrk: $(command -v "$tool") is installed."
else
  echo "ensure-wrk: wrk is not installed; the throughput benches will not run."
fi
