#!/usr/bin/env bash
# Make Debian's wrk available for `make bench` (bench/accept.py drives it): install it with
# apt-get if it is missing. Prints what it found; never fails by itself (the bench says it
# cannot measure throughput without wrk, and exits non-zero).
set -u
tool=${TRM_BENCH_WRK:-wrk}
if command -v "$tool" >/dev/null 2>&1; then
  echo "ensure-wrk: $(command -v "$tool") is installed."
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-wrk: no apt-get here; install wrk to run the throughput benches."
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "ensure-wrk: not root; install Debian's wrk to run the throughput benches."
    exit 0
  fi
fi
echo "ensure-wrk: installing Debian's wrk (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 || {
  $sudo apt-get update -qq >/dev/null 2>&1 || echo "ensure-wrk: apt-get update failed."
  $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 \
    || echo "ensure-wrk: apt-get install wrk failed."
}
if command -v "$tool" >/dev/null 2>&1; then
  echo "ensure-wrk: $(command -v "$tool") is installed."
else
  echo "ensure-wrk: wrk is not installed; the throughput benches will not run."
fi
