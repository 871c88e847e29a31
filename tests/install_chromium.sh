#!/usr/bin/env bash
# Make sure a headless Chromium is installed for the browser test of the HTML leaderboard (tests/test_html_browser.py).
#
#   bash tests/install_chromium.sh        # idempotent; run by `make test` and by the test's own session fixture
#
# Installs Debian's `chromium` package with apt-get when it is missing and this is root on a Debian-like system.
# Anywhere else it installs nothing, says why on stderr and exits 0: the browser test then skips with that reason.
# BENCH_CHROMIUM=/path/to/chrome points the test at another Chromium/Chrome binary instead.
set -uo pipefail

say() { echo "[chromium] $*" >&2; }
for b in "${BENCH_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [[ -n "$b" ]] && command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [[ "$(id -u)" != 0 ]]; then say "not installed: needs root for apt-get (set BENCH_CHROMIUM to a Chromium binary)"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then say "not installed: no apt-get on this system (set BENCH_CHROMIUM)"; exit 0; fi

say "installing Debian's chromium (apt-get; once)"
export DEBIAN_FRONTEND=noninteractive
LOG=/tmp/bench-chromium-apt.log
if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends chromium >"$LOG" 2>&1; then
  apt-get update -q >>"$LOG" 2>&1 || true
  apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends chromium >>"$LOG" 2>&1 \
    || { tail -n 15 "$LOG" >&2; say "apt-get install chromium failed (log: $LOG)"; exit 0; }
fi
command -v chromium >/dev/null 2>&1 && say "installed: $(chromium --version 2>/dev/null)" || say "chromium not found after apt-get"
exit 0
