#!/usr/bin/env bash
# Installs Debian's `chromium` (the headless browser the web console's test and `proxima data pages`
# drive) and the fonts the page templates use (fonts-dejavu-core, fonts-liberation, Roboto,
# Open Sans, Lato, Noto for Latin, Cyrillic, Greek, Arabic, Devanagari and Thai, Carlito) when
# they are missing. Idempotent. Needs root (or sudo) and apt-get, as on CI.
set -euo pipefail

FONTS=(fonts-dejavu-core fonts-liberation fonts-roboto-unhinted fonts-open-sans fonts-lato fonts-noto-core fonts-crosextra-carlito)
have_browser=0
if [[ -n "${PROXIMA_CHROMIUM:-}" && -x "${PROXIMA_CHROMIUM}" ]]; then
    have_browser=1
fi
for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        have_browser=1
    fi
done
have_fonts=1
if command -v fc-list >/dev/null 2>&1; then
    for family in "Roboto" "Open Sans" "Lato" "Noto Sans" "Liberation Sans" "Carlito"; do
        fc-list ":family=$family" | grep -q . || have_fonts=0
    done
else
    have_fonts=0
fi
if [[ $have_browser == 1 && $have_fonts == 1 ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-chromium: chromium or its fonts are missing and there is no apt-get; browser tests will be skipped" >&2
    exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    SUDO="sudo"
fi
echo "setup-chromium: installing Debian's chromium and fonts" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fontconfig "${FONTS[@]}" >/dev/null
command -v chromium >/dev/null
