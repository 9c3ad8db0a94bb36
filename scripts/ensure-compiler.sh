#!/usr/bin/env bash
# The joiner's arrival loop is a C extension (libs/join-kernel), built when `uv sync` installs the
# workspace: it needs a C compiler and the headers of the Python that runs it. Install what is missing
# from Debian's packages when we can (root, apt-get), else say what to install.
set -euo pipefail
python=${1:-python3}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[[ -f "$include/Python.h" ]] || missing+=("python3-dev")
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: the joiner's C extension needs ${missing[*]} (a C compiler and $include/Python.h); install them" >&2
    exit 1
fi
echo "[setup] installing ${missing[*]} (to build the joiner's C arrival loop)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
