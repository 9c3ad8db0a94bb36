#!/usr/bin/env bash
# The dashboard's browser test (tests/e2e/test_dashboard_browser.py) drives a real headless Chromium
# through chromedriver, both from Debian's packages: nothing is downloaded when the test runs. Install
# what is missing when we can (root, apt-get), else say what to install; then say what is installed.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)

if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: the browser test needs the Debian packages ${missing[*]}: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "[setup] installing ${missing[*]} from Debian's packages (the dashboard's browser test)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "[setup] $(chromium --version 2>/dev/null || echo 'chromium: no version') at $(command -v chromium)"
echo "[setup] $(/usr/bin/chromedriver --version 2>/dev/null | head -1) at /usr/bin/chromedriver"
