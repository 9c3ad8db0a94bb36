# Sourced by the scripts that build Go programs from the Go module proxy.
# shellcheck shell=bash

# module_info MODULE@VERSION FIELD: download a module through the proxy, print one field of
# `go mod download -json` (Dir, or Origin.Hash as "Hash").
module_info() {
  go mod download -json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("Error"):
    sys.exit(d["Error"])
print(d["Dir"] if sys.argv[1] == "Dir" else d.get("Origin", {}).get(sys.argv[1], ""))' "$2"
}

# progress_filter NAME TOTAL: turn `go build -v` output into a line per 100 packages, keeping errors.
progress_filter() {
  awk -v name="$1" -v total="$2" \
    '/^go: downloading/ {next}
     /^# |\.go:[0-9]+:|^go: |cannot find/ {print; next}
     {n++; if (n % 100 == 0) printf "[%s] compiled %d/%d packages\n", name, n, total > "/dev/stderr"}'
}
