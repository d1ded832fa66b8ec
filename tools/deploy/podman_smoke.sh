#!/usr/bin/env bash
# Container smoke test without Docker Hub: debootstrap a Debian bookworm rootfs, import it with podman as the
# base image, build Dockerfile.x86 on it (BASE_IMAGE build-arg), run the container and answer one inference
# request, check the HEALTHCHECK, the non-root user, that no torch got in, and a clean exit on SIGTERM.
# Needs root, podman, debootstrap and network access to the Debian mirror and PyPI. Slow (about 2-5 min the
# first time; the imported base is kept for later runs): outside the default test run, see tests/deploy/.
# Exit 77 = skipped (a tool is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${EDGE_DAEMON_SMOKE_DIR:-/var/tmp/edge-daemon-smoke}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/edge-daemon-base:bookworm-amd64
IMAGE=localhost/edge-daemon:x86-smoke
NAME=edge-daemon-smoke
PORT=${SMOKE_PORT:-19001}
PYTHON=${PYTHON:-$(pwd)/.venv/bin/python}

skip() { echo "SKIP: $*"; exit 77; }
step() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, rootful podman)"
command -v podman >/dev/null || skip "podman not installed (apt-get install podman)"
command -v debootstrap >/dev/null || skip "debootstrap not installed (apt-get install debootstrap)"
mkdir -p "$WORK"

if ! podman image exists "$BASE"; then
  step "debootstrap bookworm (amd64, minbase + python3) into $WORK/rootfs-amd64"
  rm -rf "$WORK/rootfs-amd64"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$WORK/rootfs-amd64" "$MIRROR" >"$WORK/debootstrap-amd64.log" 2>&1
  # Trust what this machine trusts (an egress proxy's CA, where there is one) and make pip use it.
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs-amd64/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/rootfs-amd64/etc/pip.conf"
  rm -rf "$WORK/rootfs-amd64/var/cache/apt/archives/"*.deb "$WORK/rootfs-amd64/var/lib/apt/lists/"*
  step "import the rootfs as $BASE"
  tar -C "$WORK/rootfs-amd64" -c . | podman import - "$BASE" >/dev/null
fi

# Some hosts need another OCI runtime or lower rlimits (e.g. a VM with hybrid cgroups and no CAP_SYS_RESOURCE,
# where crun refuses hybrid cgroups and both runtimes fail to set podman's default ulimits).
OPTS=()
if ! podman run --rm --network host "$BASE" true >/dev/null 2>&1; then
  OPTS=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
  podman run --rm --network host "${OPTS[@]}" "$BASE" true || skip "podman cannot run containers on this host"
  echo "podman's defaults cannot run a container here; using: ${OPTS[*]}"
fi

step "podman build -f Dockerfile.x86 --build-arg BASE_IMAGE=$BASE"
podman build "${OPTS[@]}" --format docker --network host --build-arg BASE_IMAGE="$BASE" -f Dockerfile.x86 -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log"; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
echo "image size: $((size / 1000000)) MB (base $((base_size / 1000000)) MB + edge-daemon $(((size - base_size) / 1000000)) MB)"

step "no torch, no compiler in the image"
podman run --rm "${OPTS[@]}" --no-healthcheck --entrypoint python3 "$IMAGE" -c "
import importlib.metadata as md, importlib.util as iu, shutil
names = sorted(d.metadata['Name'].lower() for d in md.distributions())
print('distributions:', ' '.join(names))
assert iu.find_spec('torch') is None and 'torch' not in names, 'torch in the image'
assert not any(shutil.which(cc) for cc in ('gcc', 'cc', 'g++', 'clang')), 'a compiler in the image'"

step "run the container (host network, port $PORT, preload shapes/1)"
podman rm -f "$NAME" >/dev/null 2>&1 || true
# No systemd here to schedule the periodic check (--health-interval disable); it is run once by hand below.
podman run -d "${OPTS[@]}" --health-interval disable --name "$NAME" --network host -e EDGE_DAEMON_PORT="$PORT" -e EDGE_DAEMON_PRELOAD=shapes/1 "$IMAGE" >/dev/null
trap 'podman logs "$NAME" >"$WORK/container.log" 2>&1 || true; podman rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
"$PYTHON" tools/deploy/smoke_request.py "http://127.0.0.1:$PORT" --timeout 120
echo "user in the container: $(podman exec "$NAME" id)"
podman healthcheck run "$NAME" && echo "HEALTHCHECK: healthy"

step "podman stop (SIGTERM)"
podman stop -t 20 "$NAME" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
echo "exit code after SIGTERM: $code"
podman logs "$NAME" 2>&1 | tail -4
[ "$code" = 0 ]
step "done"
