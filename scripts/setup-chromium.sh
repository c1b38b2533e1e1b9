#!/usr/bin/env bash
# Installs Debian's `chromium` (the headless browser the web console's test drives) when it is
# missing. Idempotent: does nothing when a chromium binary is already on PATH or in
# $PROXIMA_CHROMIUM. Needs root (or sudo) and apt-get, as on CI.
set -euo pipefail

if [[ -n "${PROXIMA_CHROMIUM:-}" && -x "${PROXIMA_CHROMIUM}" ]]; then
    exit 0
fi
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-chromium: no chromium and no apt-get; the console's browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    SUDO="sudo"
fi
echo "setup-chromium: installing Debian's chromium" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
