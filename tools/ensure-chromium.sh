#!/usr/bin/env bash
# Make Debian's chromium available for the browser tests (tests/browser): install it with
# apt-get if /usr/bin/chromium is missing. Playwright drives this browser; its own browser
# builds are never downloaded. Prints what it found; never fails the build by itself (the
# tests decide: they skip where chromium is missing, and fail in CI, as PostgreSQL's do).
set -u
browser=${TRM_TEST_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$browser" ]; then
  "$(dirname "$0")/apt-install.sh" ensure-chromium chromium fonts-dejavu-core
fi
if [ -x "$browser" ]; then
  echo "ensure-chromium: $("$browser" --version 2>/dev/null || echo "$browser") is installed."
else
  echo "ensure-chromium: chromium is not installed at $browser; browser tests will not run."
fi
