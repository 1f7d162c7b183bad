#!/usr/bin/env bash
# Installs Debian packages with apt-get, as root or through password-less sudo, for the
# ensure-* scripts: `tools/apt-install.sh NAME PACKAGE...` (NAME prefixes what it prints).
# Never fails by itself: the caller checks what is installed afterwards and says so.
set -u
name=$1
shift
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: no apt-get here; install $* by hand."
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "$name: not root; install Debian's $* by hand."
    exit 0
  fi
fi
echo "$name: installing Debian's $* (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
  $sudo apt-get update -qq >/dev/null 2>&1 || echo "$name: apt-get update failed."
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || echo "$name: apt-get install $* failed."
}
