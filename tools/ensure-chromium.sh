#!/usr/bin/env bash
# Make Debian's chromium available for the browser tests (tests/browser): install it with
# apt-get if /usr/bin/chromium is missing. Playwright drives this browser; its own browser
# builds are never downloaded. Prints what it found; never fails the build by itself (the
# tests decide: they skip where chromium is missing, and fail in CI, as PostgreSQL's do).
set -u
browser=${TRM_TEST_CHROMIUM:-/usr/bin/chromium}
if [ -x "$browser" ]; then
  echo "ensure-chromium: $("$browser" --version 2>/dev/null || echo "$browser") is installed."
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; install chromium at $browser to run the browser tests."
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "ensure-chromium: not root; install Debian's chromium to run the browser tests."
    exit 0
  fi
fi
echo "ensure-chromium: installing Debian's chromium (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null 2>&1 || echo "ensure-chromium: apt-get update failed."
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core \
  >/dev/null 2>&1 || echo "ensure-chromium: apt-get install chromium failed."
if [ -x "$browser" ]; then
  echo "ensure-chromium: $("$browser" --version 2>/dev/null || echo "$browser") is installed."
else
  echo "ensure-chromium: chromium is not installed at $browser; browser tests will not run."
fi
