#!/usr/bin/env bash
# arm64 smoke test under emulation: a `debootstrap --arch=arm64` Debian bookworm rootfs run through
# qemu-user-static, the runtime dependencies installed from their aarch64 wheels (tools/deploy/
# requirements-cpu.txt, as Dockerfile.arm64 does), edge-daemon installed and started inside, one inference
# request answered, then a clean exit on SIGTERM. Needs root, qemu-user-static, binfmt-support, debootstrap
# and network access to the Debian mirror and PyPI. Slow (about 5-15 min: the rootfs is kept for later runs;
# everything in it runs ~100x slower than native): outside the default test run, see tests/deploy/.
# Exit 77 = skipped (a tool or binfmt_misc is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${EDGE_DAEMON_SMOKE_DIR:-/var/tmp/edge-daemon-smoke}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$WORK/rootfs-arm64
PORT=${SMOKE_PORT:-19002}
PYTHON=${PYTHON:-$(pwd)/.venv/bin/python}

skip() { echo "SKIP: $*"; exit 77; }
step() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, binfmt_misc)"
command -v debootstrap >/dev/null || skip "debootstrap not installed (apt-get install debootstrap)"
command -v qemu-aarch64-static >/dev/null || skip "qemu-user-static not installed (apt-get install qemu-user-static)"
mkdir -p "$WORK"

if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  step "register qemu-aarch64 with binfmt_misc"
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || skip "cannot mount binfmt_misc"
  update-binfmts --enable qemu-aarch64 || skip "cannot register qemu-aarch64 (binfmt-support)"
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || skip "qemu-aarch64 binfmt entry missing"

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  step "debootstrap --arch=arm64 bookworm (minbase + python3) into $ROOT"
  rm -rf "$ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$ROOT" "$MIRROR" >"$WORK/debootstrap-arm64.log" 2>&1 || { tail -20 "$WORK/debootstrap-arm64.log"; exit 1; }
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOT/etc/pip.conf"

# Only /proc is mounted: mounting /sys as well has crashed emulated chroots on these machines.
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
cleanup() {
  if [ -n "${DAEMON:-}" ]; then kill "$DAEMON" 2>/dev/null || true; fi
  umount "$ROOT/proc" 2>/dev/null || true
}
trap cleanup EXIT
echo "inside the rootfs: $(chroot "$ROOT" uname -m), $(chroot "$ROOT" python3 --version)"

step "install the runtime set from aarch64 wheels, then edge-daemon (no dependencies)"
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src/tools/deploy"
cp -r setup.py README.md edge_daemon "$ROOT/src/"
cp tools/deploy/requirements-cpu.txt "$ROOT/src/tools/deploy/"
find "$ROOT/src" -name __pycache__ -prune -exec rm -rf {} +
# A clean environment: this machine's pip settings (local wheel folders, indexes) mean nothing in the rootfs.
chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root /bin/sh -ec '
  [ -x /opt/edge-daemon/bin/pip ] || python3 -m venv /opt/edge-daemon
  /opt/edge-daemon/bin/pip install -q --disable-pip-version-check --only-binary=:all: -r /src/tools/deploy/requirements-cpu.txt
  /opt/edge-daemon/bin/pip install -q --disable-pip-version-check --use-pep517 --no-deps --force-reinstall /src
  /opt/edge-daemon/bin/python -c "import platform, onnxruntime, numpy, cv2; print(platform.machine(), \"onnxruntime\", onnxruntime.__version__, \"numpy\", numpy.__version__, \"opencv\", cv2.__version__)"'

echo "virtualenv size: $(du -sm "$ROOT/opt/edge-daemon" | cut -f1) MB (pip and setuptools included)"

step "edge-daemon serve inside the emulated rootfs (port $PORT, preload shapes/1)"
chroot "$ROOT" /usr/bin/env -i PATH=/opt/edge-daemon/bin:/usr/bin:/bin ORT_DISABLE_TELEMETRY=1 \
  /opt/edge-daemon/bin/edge-daemon serve --host 127.0.0.1 --port "$PORT" --preload shapes/1 \
  --models-dir "" --cache-dir /var/cache/edge-daemon --threads 4 >"$WORK/arm64-daemon.log" 2>&1 &
DAEMON=$!
"$PYTHON" tools/deploy/smoke_request.py "http://127.0.0.1:$PORT" --timeout 600 --request-timeout 300 \
  || { tail -20 "$WORK/arm64-daemon.log"; exit 1; }

step "SIGTERM"
kill -TERM "$DAEMON"
code=0; wait "$DAEMON" || code=$?
DAEMON=
echo "exit code after SIGTERM: $code"
tail -3 "$WORK/arm64-daemon.log"
[ "$code" = 0 ]
step "done"
