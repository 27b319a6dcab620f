#!/usr/bin/env bash
# Build the cerberus container image and check it: `cerberus --version` and a small
# `cerberus segment` of a synthetic slide, run inside the image as its non-root user.
#
#   scripts/build_image.sh                        # docker or podman, whichever works
#   scripts/build_image.sh --engine podman --tag cerberus:dev --gpu
#   scripts/build_image.sh --build-arg BASE=ubuntu:24.04 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu   # a CPU-only image
#   scripts/build_image.sh --engine rootfs        # no container engine: see below
#
# With a container engine (docker or podman whose `info` succeeds) the top-level
# Dockerfile is built. Without one, the same contents are built as a root file system:
# Debian bookworm from its packages (debootstrap; installed with apt-get if missing),
# python3 + venv in /opt/venv, the CPU build of torch, the package's dependencies, the
# wheel of this package (built here from the working tree), the user `cerberus`
# (uid 1001); the checks then run in it through chroot as that user. This path needs
# root (debootstrap, mount, chroot). The root file system lives in a temporary folder
# under ${TMPDIR:-/tmp} and is removed at the end (--keep keeps it).
#
# Options: --engine docker|podman|rootfs, --tag TAG (default cerberus:VERSION),
# --build-arg K=V (repeatable; engine builds), --gpu (engine runs: segment on the GPU),
# --size WxH (synthetic slide, default 1024x1024), --keep (rootfs: keep the folder).
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), TORCH_CPU
# (default torch==2.13.0), PYTHON (to build the wheel; default .venv/bin/python or python3).
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE="" TAG="" GPU=0 SIZE=1024x1024 KEEP=0
BUILD_ARGS=()
die() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) ENGINE=${2:?--engine needs a value}; shift 2 ;;
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    --build-arg) BUILD_ARGS+=(--build-arg "${2:?--build-arg needs K=V}"); shift 2 ;;
    --gpu) GPU=1; shift ;;
    --size) SIZE=${2:?--size needs WxH}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ $SIZE =~ ^[0-9]+x[0-9]+$ ]] || die "--size must be WIDTHxHEIGHT, not '$SIZE'"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
VERSION=$("$PY" -c "import re; print(re.search(r'__version__ = \"([^\"]+)\"', open('cerberus_cli/__init__.py').read())[1])")
TAG=${TAG:-cerberus:$VERSION}

STEP_T0=0
step() { STEP_T0=$(date +%s); echo "== $*"; }
done_step() { echo "   took $(( $(date +%s) - STEP_T0 )) s"; }

if [ -z "$ENGINE" ]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      ENGINE=$candidate; break
    fi
  done
  if [ -z "$ENGINE" ]; then
    echo "no working container engine (docker/podman info fails): building a root file system"
    ENGINE=rootfs
  fi
fi

# --- with a container engine -------------------------------------------------------------
if [ "$ENGINE" = docker ] || [ "$ENGINE" = podman ]; then
  "$ENGINE" info >/dev/null 2>&1 || die "$ENGINE info fails: is its daemon or service running?"
  step "$ENGINE build -t $TAG ${BUILD_ARGS[*]} ."
  "$ENGINE" build -t "$TAG" "${BUILD_ARGS[@]}" .
  done_step
  "$ENGINE" image ls "$TAG"
  DATA=$(mktemp -d)
  trap 'rm -rf "$DATA"' EXIT
  RUN=("$ENGINE" run --rm --user "$(id -u):$(id -g)" -v "$DATA:/data")
  DEVICE=cpu
  if [ "$GPU" = 1 ]; then
    DEVICE=cuda
    if [ "$ENGINE" = podman ]; then RUN+=(--device nvidia.com/gpu=all); else RUN+=(--gpus all); fi
  fi
  step "cerberus --version"
  "${RUN[@]}" "$TAG" --version
  step "cerberus synth slide /data/smoke.svs --size $SIZE"
  "${RUN[@]}" "$TAG" synth slide /data/smoke.svs --size "$SIZE" --seed 1 --no-truth
  done_step
  step "cerberus segment /data/smoke.svs -o /data/out --device $DEVICE"
  "${RUN[@]}" "$TAG" segment /data/smoke.svs -o /data/out --device "$DEVICE"
  done_step
  ls -l "$DATA/out"
  exit 0
fi
[ "$ENGINE" = rootfs ] || die "--engine must be docker, podman or rootfs, not '$ENGINE'"

# --- without one: a Debian root file system and chroot -----------------------------------
[ "$(id -u)" = 0 ] || die "the root file system build needs root (debootstrap, mount, chroot)"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_CPU=${TORCH_CPU:-torch==2.13.0}
APP_UID=1001
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cerberus-image.XXXXXX")
ROOT=$WORK/rootfs

mounts_under_root() { awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r; }
mounted() { [ -n "$(mounts_under_root)" ]; }
cleanup() {
  set +e
  mounts_under_root | while read -r m; do umount "$m" || umount -l "$m"; done
  if mounted; then
    echo "warning: mounts remain under $ROOT; not removing it" >&2
  elif [ "$KEEP" = 1 ]; then
    echo "root file system kept in $ROOT"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT

if ! command -v debootstrap >/dev/null 2>&1; then
  step "apt-get install debootstrap"
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
  done_step
fi

step "wheel of this package (from the working tree: tracked and untracked, not ignored)"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/wheelhouse"
git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md LICENSE cerberus_cli models \
  | xargs -0 -I{} sh -c '[ ! -e "$1" ] || cp --parents "$1" "$2"' _ {} "$WORK/src"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/cerberus_pathology-*.whl)
"$PY" -m zipfile -l "$WHEEL" | grep -q "cerberus_cli/bundled/default.pt" \
  || die "$WHEEL does not hold the bundled model"
"$PY" -c "import tomllib; deps = tomllib.load(open('$WORK/src/pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('torch')))" \
  > "$WORK/requirements.txt"
echo "   $(basename "$WHEEL"): $(du -h "$WHEEL" | cut -f1)"
done_step

step "debootstrap --variant=minbase bookworm ($MIRROR)"
nice -n 15 debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
echo "   base system: $(du -sh --one-file-system "$ROOT" | cut -f1)"
done_step

CHROOT_PY=$(chroot "$ROOT" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
HOST_PY=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
step "wheels for Python $CHROOT_PY: $TORCH_CPU and the dependencies (pip of this machine)"
[ "$CHROOT_PY" = "$HOST_PY" ] || die "the root file system has Python $CHROOT_PY, this machine $HOST_PY"
nice -n 15 "$PY" -m pip download -q --only-binary=:all: --dest "$WORK/wheelhouse" \
  "$TORCH_CPU" -r "$WORK/requirements.txt"
echo "   wheelhouse: $(ls "$WORK/wheelhouse" | wc -l) wheels, $(du -sh "$WORK/wheelhouse" | cut -f1)"
done_step

# /proc, a private /dev/shm (worker processes share tensors through it) and, where
# debootstrap could not create them, the basic device nodes one by one. /dev itself is
# never bound: a mount below a bound /dev could reach this machine's own /dev.
mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/dev/shm"
mount -t tmpfs -o size=1g,mode=1777 tmpfs "$ROOT/dev/shm"
for node in null zero full random urandom tty; do
  if [ ! -c "$ROOT/dev/$node" ]; then
    rm -f "$ROOT/dev/$node"; touch "$ROOT/dev/$node"; mount --bind "/dev/$node" "$ROOT/dev/$node"
  fi
done
mkdir -p "$ROOT/tmp/wheelhouse" "$ROOT/tmp/dist"
cp "$WORK"/wheelhouse/*.whl "$ROOT/tmp/wheelhouse/"
cp "$WHEEL" "$WORK/requirements.txt" "$ROOT/tmp/dist/"
IN=(chroot "$ROOT" env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1)

step "image contents: venv, torch, dependencies, the package (as in the Dockerfile)"
nice -n 15 "${IN[@]}" sh -ec "
  python3 -m venv /opt/venv
  pip install -q --no-index --find-links /tmp/wheelhouse '$TORCH_CPU'
  pip install -q --no-index --find-links /tmp/wheelhouse -r /tmp/dist/requirements.txt
  pip install -q --no-deps /tmp/dist/$(basename "$WHEEL")
  groupadd --gid $APP_UID cerberus
  useradd --create-home --uid $APP_UID --gid $APP_UID --shell /usr/sbin/nologin cerberus
  install -d -o $APP_UID -g $APP_UID /data
  rm -rf /tmp/wheelhouse /tmp/dist /var/cache/apt/archives/*.deb"
echo "   root file system: $(du -sh --one-file-system "$ROOT" | cut -f1), /opt/venv: $(du -sh "$ROOT/opt/venv" | cut -f1)"
done_step

AS_USER=(chroot "--userspec=$APP_UID:$APP_UID" "$ROOT" env -i PATH=/opt/venv/bin:/usr/bin:/bin
         HOME=/home/cerberus XDG_CACHE_HOME=/tmp/.cache PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1)
step "cerberus --version (as uid $APP_UID)"
"${AS_USER[@]}" sh -c 'cd /data && cerberus --version && id'
step "cerberus synth slide /data/smoke.svs --size $SIZE"
"${AS_USER[@]}" sh -c "cd /data && cerberus synth slide smoke.svs --size $SIZE --seed 1 --no-truth"
done_step
step "cerberus segment /data/smoke.svs -o /data/out --device cpu"
nice -n 15 "${AS_USER[@]}" sh -c "cd /data && cerberus segment smoke.svs -o out --device cpu"
done_step
ls -l "$ROOT/data/out"
