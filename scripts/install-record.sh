# Sourced by the scripts that put Dapr's binaries in ~/.dapr/bin. Each binary they install gets a
# record beside it (`<binary>.install`: version, sha256, source), written at install; a binary that
# has no record, or whose bytes no longer match it, is not trusted and is installed again.
# Release archives are checked against the sha256 that Dapr publishes beside each one.
# shellcheck shell=bash

# trusted BINARY VERSION: true when BINARY was installed by these scripts at VERSION, unchanged since.
trusted() {
  local binary="$1" version="$2" record="$1.install"
  [ -x "$binary" ] && [ -f "$record" ] || return 1
  [ "$(sed -n 's/^version=//p' "$record")" = "$version" ] || return 1
  [ "$(sed -n 's/^sha256=//p' "$record")" = "$(sha256sum "$binary" | cut -d' ' -f1)" ]
}

# install_recorded FILE BINARY VERSION SOURCE: install FILE as BINARY (0755) and write its record.
install_recorded() {
  local file="$1" binary="$2" version="$3" source="$4"
  install -m 0755 "$file" "$binary"
  printf 'version=%s\nsha256=%s\nsource=%s\n' "$version" "$(sha256sum "$binary" | cut -d' ' -f1)" "$source" >"$binary.install"
}

# download_verified URL FILE: download URL to FILE and check it against URL.sha256 (Dapr's release
# assets each have one); false when either download fails (the caller builds instead), fatal when the
# checksum does not match.
download_verified() {
  local url="$1" file="$2" published expected actual
  curl -fsSL --connect-timeout 5 --max-time 300 -o "$file" "$url" 2>/dev/null || return 1
  if ! published="$(curl -fsSL --connect-timeout 5 --max-time 60 "$url.sha256" 2>/dev/null)"; then
    printf '%s: no published sha256 to check it against; not using it\n' "$url" >&2
    return 1
  fi
  expected="$(printf '%s\n' "$published" | awk '{print $1; exit}')"
  actual="$(sha256sum "$file" | cut -d' ' -f1)"
  if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
    printf '%s: sha256 %s does not match the published %s; not installing it\n' "$url" "$actual" "${expected:-(none)}" >&2
    exit 1
  fi
}
