#!/usr/bin/env bash
# Build every container image of the local cluster with no registry and no daemon: Debian root file
# systems from mmdebstrap, the services' own Dockerfiles with buildah, the Dapr control plane and
# the pod sandbox from static binaries. Each image is left as a docker-archive tar for
# `ctr images import` in $CLUSTER_CACHE/images/, and images.txt there lists "<reference> <tar>".
#
# An image is rebuilt only when its inputs change: its recipe (the functions below, hashed), the
# host's CA bundle, the binaries it carries, or the files a service's Dockerfile copies.
# IMAGES_REBUILD=1 rebuilds everything. Needs root (mmdebstrap's root mode, buildah's storage).
set -euo pipefail
SCRIPT_NAME=images
. "$(dirname "$0")/lib.sh"

out="$CLUSTER_CACHE/images"
work="$CLUSTER_CACHE/image-build" # buildah's storage, build keys and logs: nothing outside the cache
dapr_bin="${DAPR_CONTROL_PLANE_BIN:-$CLUSTER_CACHE/dapr/$DAPR_VERSION/bin}"
pause_bin="${PAUSE_BIN:-$CLUSTER_CACHE/kubernetes/$KUBERNETES_VERSION/bin/pause}"
host_ca=/etc/ssl/certs/ca-certificates.crt

python_ref=localhost/power-usage/python:3.11-bookworm
redis_ref=localhost/power-usage/redis:bookworm
rabbitmq_ref=localhost/power-usage/rabbitmq:bookworm
pause_ref=localhost/power-usage/pause:3.10
services=(joiner message-gen message-proc)
dapr_binaries=(daprd operator injector sentry placement scheduler)
# besides the module its CMD runs, what a service image must import: the joiner's C extension
declare -A extra_imports=([joiner]=join_kernel)

[ "$(id -u)" = 0 ] || die "run as root: mmdebstrap builds in root mode and buildah needs its storage"
# buildah runs RUN steps and checks with an OCI runtime, which it only recommends (runc: also containerd's)
ensure_debian_packages mmdebstrap buildah runc git
command -v python3 >/dev/null || die "python3 is missing"
[ -r "$host_ca" ] || die "no CA bundle at $host_ca"

# overlay when the kernel has it (fast, images reuse the layers they have in common); vfs copies each layer, works anywhere
driver="${IMAGES_STORAGE_DRIVER:-$(grep -qw overlay /proc/filesystems && echo overlay || echo vfs)}"
bah() { buildah --root "$work/storage-$driver" --runroot "$work/run-$driver" --storage-driver "$driver" "$@"; }

mkdir -p "$out" "$work/keys" "$work/logs"
exec 9>"$work/lock"
flock -n 9 || die "another images.sh is running (lock $work/lock)"
rm -rf "$work/tmp" && mkdir -p "$work/tmp"
cleanup() {
  # the storage is ours alone (see the lock), so every working container left is one of ours
  bah rm --all >/dev/null 2>&1 || true
  rm -rf "$work/tmp"
}
trap cleanup EXIT

digest() { sha256sum | cut -c1-32; }
# fresh NAME KEY: NAME.tar exists and was built from inputs hashing to KEY
fresh() { [ -z "${IMAGES_REBUILD:-}" ] && [ -f "$out/$1.tar" ] && [ "$(cat "$work/keys/$1" 2>/dev/null)" = "$2" ]; }
# tree_hash PATH...: content hash of the files git knows under PATHs (tracked, or new and not ignored)
tree_hash() {
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard -- "$@" | sort -zu |
    while IFS= read -r -d '' f; do if [ -f "$f" ]; then sha256sum -- "$f"; fi; done) | digest
}
# logged NAME CMD...: run CMD with its output in $work/logs/NAME.log; on failure show the end and stop
logged() {
  local log="$work/logs/$1.log"
  shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$1 failed (full log: $log)"
  fi
}
manifest=() # "<reference> <tar>" lines for images.txt
rebuilt=0   # whether anything was built, and so buildah's storage holds superseded images

# save_image NAME KEY REF...: write the image REF as $out/NAME.tar, tagged with every REF; record KEY
save_image() {
  local name="$1" key="$2"
  shift 2
  local tmp="$work/tmp/$name.tar"
  bah push --quiet "$1" "docker-archive:$tmp:$1" >/dev/null
  # a docker-archive written by buildah carries one tag; ctr import creates one image per RepoTag
  [ $# -eq 1 ] || python3 - "$tmp" "$@" <<'PY'
import io, json, os, sys, tarfile
path, refs = sys.argv[1], sys.argv[2:]
with tarfile.open(path) as src, tarfile.open(path + ".new", "w") as dst:
    for member in src:
        data = src.extractfile(member) if member.isfile() else None
        if member.name == "manifest.json":
            manifest = json.load(data)
            manifest[0]["RepoTags"] = refs
            body = json.dumps(manifest).encode()
            member.size = len(body)
            data = io.BytesIO(body)
        dst.addfile(member, data)
os.replace(path + ".new", path)
PY
  mv "$tmp" "$out/$name.tar"
  echo "$key" >"$work/keys/$name"
  rebuilt=1
}

# check_runs REF CMD...: CMD succeeds in a container of REF (no network), or the image is broken
check_runs() {
  local ref="$1" ctr
  shift
  ctr="$(bah from --pull=never --quiet "$ref")"
  if ! bah run --network none "$ctr" -- "$@" >"$work/logs/check.log" 2>&1; then
    cat "$work/logs/check.log" >&2
    die "$ref is broken: '$*' failed in it"
  fi
  bah rm "$ctr" >/dev/null
}

# --- Debian root file systems --------------------------------------------------------------------
mirrors=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# like Debian's slim images: no manuals, info pages, docs (but the copyrights) or translations
slim=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)
# an image from scratch has no PATH; this is Debian's (and python:3.11-slim's) default
debian_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# debian_rootfs DIR VARIANT PACKAGES [MMDEBSTRAP-OPTION...]: Debian bookworm in DIR, without what a
# container runtime provides itself (/dev, resolv.conf, hostname). /usr is merged as debootstrap
# does it, which spares the images usrmerge and the perl it needs.
debian_rootfs() {
  local dir="$1" variant="$2" packages="$3"
  shift 3
  mmdebstrap --mode=root --variant="$variant" --include="$packages" "${slim[@]}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "$@" \
    bookworm "$dir" "${mirrors[@]}"
  find "$dir/dev" -mindepth 1 -delete
  rm -f "$dir/etc/resolv.conf" "$dir/etc/hostname"
}

# add_host_cas ROOT (an mmdebstrap hook): the certificates the host trusts beyond Debian's (an
# intercepting proxy's CA) become local CAs of ROOT, so its bundle keeps them when regenerated
cat >"$work/tmp/add-host-cas.py" <<'PY'
import re, sys
host_bundle, root = sys.argv[1:]
pem = lambda path: re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", open(path).read(), re.S)
known = {re.sub(r"\s", "", c) for c in pem(root + "/etc/ssl/certs/ca-certificates.crt")}
extra = [c for c in pem(host_bundle) if re.sub(r"\s", "", c) not in known]
for i, cert in enumerate(extra):
    with open(f"{root}/usr/local/share/ca-certificates/host-{i}.crt", "w") as f:
        f.write(cert + "\n")
print(f"{len(extra)} host CA certificate(s) added")
PY

# The base of the service images, standing in for python:3.11-slim: the packages their Dockerfiles
# use, the headers of the joiner's C extension, pip allowed to install (no EXTERNALLY-MANAGED, kept
# out by dpkg so that package upgrades do not bring it back), and the host's CAs for uv and pip.
# shellcheck disable=SC2016 # a hook's $1 is mmdebstrap's: the root file system
recipe_python() {
  local ctr="$1" dir="$2"
  debian_rootfs "$dir" minbase "python3,python3-dev,python3-pip,python3-venv,python-is-python3,ca-certificates,passwd" \
    --dpkgopt='path-exclude=/usr/lib/python3.11/EXTERNALLY-MANAGED' \
    --customize-hook="python3 '$work/tmp/add-host-cas.py' '$host_ca' \"\$1\"" \
    --customize-hook='chroot "$1" update-ca-certificates'
  # uv trusts its built-in roots unless told; Debian's pip reads this bundle already
  bah config --env PATH="$debian_path" --env LANG=C.UTF-8 --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --cmd '["python3"]' "$ctr"
}

# Redis as deploy/base/brokers/redis.yaml runs it: uid 999, read-only root, the manifest's args to
# redis-server, data in the /data volume; sh, grep and redis-cli for the readiness probe.
recipe_redis() {
  local ctr="$1" dir="$2"
  debian_rootfs "$dir" essential "redis-server,redis-tools"
  install -d -m 0770 -o 999 -g 999 "$dir/data"
  bah config --env PATH="$debian_path" --user 999:999 --workingdir /data --volume /data --port 6379 \
    --entrypoint '["redis-server"]' "$ctr"
}

# RabbitMQ as deploy/base/brokers/rabbitmq.yaml runs it: uid 999 without a passwd entry, read-only
# root, writable /var/lib/rabbitmq (data and, as HOME, the Erlang cookie the CLI shares), /tmp and
# /var/log/rabbitmq. Debian's /usr/sbin wrappers insist on root or the rabbitmq user, so PATH puts
# RabbitMQ's own scripts first; logs go to the console. RabbitMQ 3.10 reads RABBITMQ_DEFAULT_USER
# and RABBITMQ_DEFAULT_PASS itself when it creates its database: no entry point script is needed.
recipe_rabbitmq() {
  local ctr="$1" dir="$2"
  debian_rootfs "$dir" essential "rabbitmq-server"
  install -d -m 0770 -o 999 -g 999 "$dir/var/lib/rabbitmq" "$dir/var/log/rabbitmq"
  bah config --user 999:999 --workingdir /var/lib/rabbitmq \
    --env PATH="/usr/lib/rabbitmq/bin:$debian_path" --env HOME=/var/lib/rabbitmq --env RABBITMQ_LOGS=- \
    --volume /var/lib/rabbitmq --port 5672 --cmd '["rabbitmq-server"]' "$ctr"
}

# Dapr's control plane, one image under every name the Helm chart asks for ({registry}/{name}:{tag});
# the chart gives each container its command. Nonroot like Dapr's distroless images.
recipe_dapr() {
  local ctr="$1" dir="$2" b
  for b in "${dapr_binaries[@]}"; do install -m 0755 "$dapr_bin/$b" "$dir/$b"; done
  install -d -m 0755 "$dir/etc"
  install -d -m 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  bah config --user 65532:65532 "$ctr"
}

# The pod sandbox: kubernetes' pause, run as nobody like the upstream image.
recipe_pause() {
  local ctr="$1" dir="$2"
  install -m 0755 "$pause_bin" "$dir/pause"
  bah config --user 65535:65535 --entrypoint '["/pause"]' "$ctr"
}

# image NAME KEY RECIPE REF...: unless fresh, run RECIPE on an empty working container, commit it,
# run check_NAME on it if there is one, and save it
image() {
  local name="$1" key="$2" recipe="$3" ctr start=$SECONDS
  shift 3
  local r
  for r in "$@"; do manifest+=("$r $name.tar"); done
  if fresh "$name" "$key"; then
    say "skip $name: $1 is up to date ($name.tar)"
    return
  fi
  say "building $1 ($recipe, log: $work/logs/$name.log)"
  ctr="$(bah from --quiet scratch)"
  logged "$name" "$recipe" "$ctr" "$(bah mount "$ctr")"
  bah umount "$ctr" >/dev/null
  bah commit --quiet --format docker --rm "$ctr" "$1" >/dev/null
  if declare -F "check_$name" >/dev/null; then "check_$name" "$1"; fi
  save_image "$name" "$key" "$@"
  say "built $1 in $((SECONDS - start))s: $name.tar $(du -h "$out/$name.tar" | cut -f1)"
}

# --- 1. the Python base ---------------------------------------------------------------------------
say "step 1/6: Python base (mmdebstrap, 1 to 2 min when cold)"
python_key="$({ declare -f recipe_python debian_rootfs; declare -p mirrors slim debian_path; cat "$work/tmp/add-host-cas.py" "$host_ca"; } | digest)"
check_python() {
  check_runs "$1" sh -c '
    python -c "import ssl, sysconfig, os, venv; assert os.path.exists(sysconfig.get_paths()[\"include\"] + \"/Python.h\")" &&
    pip --version && command -v useradd groupadd apt-get && ! test -e /usr/lib/python3.11/EXTERNALLY-MANAGED'
}
image python "$python_key" recipe_python "$python_ref"
if ! bah inspect --type image "$python_ref" >/dev/null 2>&1; then
  # the archive is current but buildah's storage lost the image: the service builds need it there
  bah pull --quiet "docker-archive:$out/python.tar" >/dev/null
fi
python_id="$(bah inspect --type image --format '{{.FromImageID}}' "$python_ref")"

# --- 2. the services, from their Dockerfiles ------------------------------------------------------
# build_service SVC: `docker build -f services/SVC/Dockerfile .` with the local base, then import
# the module its CMD runs as the image's user
build_service() {
  local svc="$1" ref="localhost/power-usage/$1:local" key start=$SECONDS module
  key="$({ echo "$python_id"; declare -f build_service check_runs; tree_hash .dockerignore pyproject.toml uv.lock libs "services/$svc"; } | digest)"
  manifest+=("$ref $svc.tar")
  if fresh "$svc" "$key"; then
    say "skip $svc: $ref is up to date ($svc.tar)"
    return
  fi
  say "building $ref (buildah bud -f services/$svc/Dockerfile, log: $work/logs/$svc.log)"
  # --network host: apt and uv reach their mirrors from RUN steps; --layers reuses the steps the
  # services have in common (apt, pip install uv, the runtime user)
  logged "$svc" bah bud --pull=never --layers --format docker --network host \
    --build-arg PYTHON_IMAGE="$python_ref" -f "$repo/services/$svc/Dockerfile" -t "$ref" "$repo"
  module="$(bah inspect --type image "$ref" | python3 -c 'import json, sys; c = json.load(sys.stdin)["OCIv1"]["config"].get("Cmd") or []; print(c[2] if c[:2] == ["python", "-m"] else "")')"
  [ -n "$module" ] || die "$ref: its CMD does not run a module (python -m MODULE); cannot check it"
  check_runs "$ref" python -c "import $module${extra_imports[$svc]:+, ${extra_imports[$svc]}}"
  save_image "$svc" "$key" "$ref"
  say "built $ref in $((SECONDS - start))s (imports $module${extra_imports[$svc]:+ and ${extra_imports[$svc]}}): $svc.tar $(du -h "$out/$svc.tar" | cut -f1)"
}
say "step 2/6: service images (buildah bud, under a minute each when cold)"
for svc in "${services[@]}"; do build_service "$svc"; done

# --- 3, 4. the brokers ------------------------------------------------------------------------------
say "step 3/6: Redis"
check_redis() { check_runs "$1" sh -c 'redis-server --version && redis-cli --version'; }
image redis "$({ declare -f recipe_redis debian_rootfs; declare -p mirrors slim debian_path; } | digest)" recipe_redis "$redis_ref"
say "step 4/6: RabbitMQ"
check_rabbitmq() { check_runs "$1" sh -c 'command -v rabbitmq-server rabbitmq-diagnostics erl'; }
image rabbitmq "$({ declare -f recipe_rabbitmq debian_rootfs; declare -p mirrors slim debian_path; } | digest)" recipe_rabbitmq "$rabbitmq_ref"

# --- 5. Dapr's control plane ------------------------------------------------------------------------
say "step 5/6: Dapr $DAPR_VERSION control plane"
for b in "${dapr_binaries[@]}"; do
  [ -x "$dapr_bin/$b" ] || die "no Dapr binary $dapr_bin/$b: build the control plane first (scripts/cluster/install-dapr-control-plane.sh)"
done
dapr_refs=()
for b in "${dapr_binaries[@]}"; do dapr_refs+=("localhost/dapr/$b:$DAPR_VERSION"); done
# size and modification time stand for the content: hashing ~1 GB of binaries would take most of a run
dapr_key="$({ declare -f recipe_dapr; declare -p dapr_refs; cd "$dapr_bin" && stat -L -c '%n %s %Y' "${dapr_binaries[@]}"; } | digest)"
check_dapr() { check_runs "$1" /daprd --version; }
image dapr "$dapr_key" recipe_dapr "${dapr_refs[@]}"

# --- 6. the pod sandbox -----------------------------------------------------------------------------
say "step 6/6: pause"
[ -x "$pause_bin" ] || die "no pause binary at $pause_bin: build Kubernetes first (scripts/cluster/install-kubernetes.sh)"
image pause "$({ declare -f recipe_pause; sha256sum <"$pause_bin"; } | digest)" recipe_pause "$pause_ref"

if [ "$rebuilt" = 1 ]; then
  # superseded images and their build-step layers; the current images keep theirs for --layers
  bah rmi --prune >/dev/null
  say "pruned superseded images: buildah's storage holds $(du -sh "$work/storage-$driver" | cut -f1)"
fi

# the manifest, and nothing else in $out for an importer to trip on
printf '%s\n' "${manifest[@]}" >"$work/tmp/images.txt"
mv "$work/tmp/images.txt" "$out/images.txt"
declare -A keep=([images.txt]=1)
for line in "${manifest[@]}"; do keep[${line##* }]=1; done
for f in "$out"/* "$out"/.[!.]*; do
  if [ -e "$f" ] && [ -z "${keep[${f##*/}]:-}" ]; then
    say "removing stale $f"
    rm -rf "$f"
  fi
done
say "images ready in $out ($(du -sh "$out" | cut -f1)): $(awk '{print $1}' "$out/images.txt" | tr '\n' ' ')"
