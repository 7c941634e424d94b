#!/usr/bin/env bash
# Build the Raspberry Pi fork of libcamera with its software "virtual" camera, and a venv that runs
# real picamera2 on it, for tests/real_camera (our Picamera2 adapter on a real libcamera).
#
#   tools/build_libcamera.sh SOURCE [PREFIX]
#
# SOURCE is one of:
#   - a source tarball (e.g. ../shared/vendor/libcamera-v0.7.1+rpt20260429.tar.gz, `git archive` of
#     the fork with one top folder);
#   - a libcamera source folder (a git checkout);
#   - URL#TAG, e.g. https://github.com/raspberrypi/libcamera.git#v0.7.1+rpt20260429 (needs the
#     network and git).
# PREFIX (default: build/libcamera-prefix in the repository, git-ignored) receives the libcamera
# install, the venv (PREFIX/venv: picamera2 0.3.38, this project in editable mode, pytest) and the
# virtual camera's definition. A second run with the same SOURCE skips the build.
#
# Only the environment for the tests is printed on stdout (`eval "$(tools/build_libcamera.sh ...)"`
# sets it); progress goes to stderr, the compiler's output to PREFIX/build.log. Needs the apt
# packages in APT_PACKAGES below: installed when run as root, else named with the command to run.
set -euo pipefail

PICAMERA2_VERSION=0.3.38
# Build tools and the bindings' build dependencies, in the venv whose Python the bindings are built
# for. pybind11 3.0.4 and later break the bindings (CameraManager.cameras: "Unable to convert
# std::shared_ptr<T> to Python").
BUILD_PIP=(meson ninja "pybind11<3" jinja2 ply pyyaml)
# libcap-dev: python-prctl, a picamera2 dependency, builds against it.
APT_PACKAGES=(g++ pkg-config cmake python3-dev python3-venv libyaml-dev libjpeg-dev libyuv-dev
              libgnutls28-dev libudev-dev libcap-dev)
# Only the virtual pipeline and the Python bindings. udev stays on: without it the camera manager
# fails to start (ENODEV) on kernels without /sys/bus/media.
MESON_OPTIONS=(-Dpipelines=virtual "-Dipas=[]" -Dpycamera=enabled -Dudev=enabled -Dwerror=false
               -Dv4l2=disabled -Dgstreamer=disabled -Dcam=disabled -Dqcam=disabled
               -Dlc-compliance=disabled -Dtest=false -Ddocumentation=disabled -Dtracing=disabled
               -Dlibdw=disabled -Dlibunwind=disabled -Drpi-awb-nn=disabled -Dsoftisp-gpu=disabled)
# Bumped when the build itself changes, so that an old prefix is built again.
RECIPE=2

say() { printf 'build_libcamera: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

[[ $# -ge 1 && $# -le 2 ]] || usage 2
[[ $1 == -h || $1 == --help ]] && usage 0
source_arg=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${2:-$repo/build/libcamera-prefix}
python=${PYTHON:-python3}

# -- what is being built (the stamp decides whether to build again) ------------------------------
git_url='' git_tag=''
if [[ -f $source_arg ]]; then
  source_id="tarball $(sha256sum "$source_arg" | cut -d' ' -f1)"
elif [[ -d $source_arg ]]; then
  [[ -f $source_arg/meson.build ]] || die "$source_arg is not a libcamera source folder (no meson.build)"
  source_arg=$(cd "$source_arg" && pwd)
  if rev=$(git -C "$source_arg" rev-parse HEAD 2>/dev/null); then
    dirty=$(git -C "$source_arg" status --porcelain --untracked-files=no | head -c1)
    source_id="checkout $rev${dirty:+ (modified)}"
  else
    source_id="folder $source_arg"
  fi
elif [[ $source_arg == *://*#* ]]; then
  git_url=${source_arg%#*} git_tag=${source_arg##*#}
  source_id="git $git_url $git_tag"
else
  die "$source_arg: no such file or folder (give the libcamera tarball, a source folder, or URL#TAG)"
fi
stamp="recipe $RECIPE; $source_id; ${MESON_OPTIONS[*]}"
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
venv=$prefix/venv
log=$prefix/build.log

# -- apt packages ---------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[[ -n $git_url ]] && ! command -v git >/dev/null && missing+=(git)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >>"$log" 2>&1 ||
      { apt-get update -qq >>"$log" 2>&1 && apt-get install -y -qq "${missing[@]}" >>"$log" 2>&1; } ||
      die "apt-get could not install ${missing[*]} (see $log)"
  else
    die "missing build packages: run \`sudo apt-get install ${missing[*]}\`, then this script again"
  fi
fi

# -- the venv -------------------------------------------------------------------------------------
if [[ ! -x $venv/bin/python ]]; then
  say "creating the venv $venv"
  "$python" -m venv "$venv" || die "could not create a venv with $python (apt-get install python3-venv)"
fi
vpy=$venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
pip_install() { "$vpy" -m pip install --quiet "$@" >>"$log" 2>&1 || die "pip install $* failed (see $log)"; }

# -- libcamera ------------------------------------------------------------------------------------
if [[ -f $prefix/.built && $(cat "$prefix/.built") == "$stamp" && -d $prefix/lib ]]; then
  say "libcamera already built in $prefix ($source_id): build skipped"
else
  say "building libcamera from $source_id into $prefix (several minutes; output in $log)"
  : >"$log"
  rm -f "$prefix/.built"
  pip_install "${BUILD_PIP[@]}"
  # Built outside any git work tree: libcamera takes its version from `git describe` of the
  # folder it is built in, which would be this repository's.
  work=$(mktemp -d "${TMPDIR:-/tmp}/libcamera-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  if [[ -n $git_url ]]; then
    git clone --quiet --depth 1 --branch "$git_tag" "$git_url" "$work/src" >>"$log" 2>&1 ||
      die "git clone of $git_url at $git_tag failed (no network? give the tarball instead)"
    src=$work/src
  elif [[ -d $source_arg ]]; then
    src=$source_arg
  else
    tar -xzf "$source_arg" -C "$work" || die "$source_arg is not a readable .tar.gz"
    top=("$work"/*/meson.build)
    [[ -f ${top[0]} ]] || die "$source_arg holds no libcamera source folder"
    src=$(dirname "${top[0]}")
    # `git archive` leaves out the version file `meson dist` writes: take it from the name.
    version=$(basename "$source_arg")
    version=${version#libcamera-v}
    version=${version%.tar.gz}
    [[ -f $src/.tarball-version || ! $version =~ ^[0-9]+\.[0-9]+ ]] || printf '%s\n' "$version" >"$src/.tarball-version"
  fi
  # meson's python module and pybind11 both come from the venv, so the bindings fit its Python.
  printf "[binaries]\npython3 = '%s'\npython = '%s'\n" "$vpy" "$vpy" >"$work/native.ini"
  pybind11_pc=$("$vpy" -c 'import pybind11, pathlib; print(pathlib.Path(pybind11.get_include()).parent / "share/pkgconfig")')
  (
    export PATH=$venv/bin:$PATH PKG_CONFIG_PATH=$pybind11_pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    meson setup "$work/build" "$src" --native-file "$work/native.ini" --prefix "$prefix" \
      --libdir lib --buildtype plain --wrap-mode nodownload \
      "${MESON_OPTIONS[@]}" &&
      # Only what gets installed (the libraries, the bindings and their generated headers), not
      # the helper apps and IPA libraries the tests never load.
      read -ra targets < <(meson introspect "$work/build" --targets | "$vpy" -c '
import json, os, sys
print(" ".join(os.path.relpath(f, sys.argv[1]) for t in json.load(sys.stdin) if t["installed"]
               for f in t["filename"]))' "$work/build") &&
      ((${#targets[@]})) &&
      ninja -C "$work/build" -j "$(nproc)" "${targets[@]}" &&
      meson install -C "$work/build" --no-rebuild --strip --quiet
  ) >>"$log" 2>&1 || { tail -n 40 "$log" >&2; die "the libcamera build failed (whole output in $log)"; }
  printf '%s\n' "$stamp" >"$prefix/.built"
  say "libcamera built"
fi

# The folder holding the bindings' package (for PYTHONPATH).
pydir=$(find "$prefix/lib" -path '*-packages/libcamera/__init__.py' -printf '%h\n' -quit)
[[ -n $pydir ]] || die "the libcamera Python package is missing from $prefix/lib: delete $prefix and run again"
pydir=$(dirname "$pydir")

# -- picamera2 and this project -------------------------------------------------------------------
if ! "$vpy" -c "import importlib.metadata as m, sys; sys.exit(m.version('picamera2') != '$PICAMERA2_VERSION')" 2>/dev/null; then
  say "installing picamera2 $PICAMERA2_VERSION into the venv"
  pip_install "picamera2==$PICAMERA2_VERSION"
fi
say "installing this project (editable) into the venv"
pip_install -e "${repo}[test]"

# -- the virtual camera: the sizes a scan uses, colour bars ---------------------------------------
yaml=$prefix/share/libcamera/pipeline/virtual/virtual.yaml
mkdir -p "$(dirname "$yaml")"
cat >"$yaml" <<'EOF'
# Written by tools/build_libcamera.sh: the one camera tests/real_camera opens.
%YAML 1.1
---
"Virtual0":
  supported_formats:
  - width: 1920
    height: 1080
  - width: 640
    height: 480
  test_pattern: "bars"
  location: "CameraLocationFront"
  model: "Virtual Video Device"
EOF

# Check the result the way the tests use it: the bindings load and list the camera.
LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYTHONPATH=$pydir LIBCAMERA_LOG_LEVELS='*:ERROR' "$vpy" -c '
import libcamera
cm = libcamera.CameraManager.singleton()
assert cm.cameras, "libcamera lists no camera"
' >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "the built libcamera does not list the virtual camera (see $log)"; }

say "ready: run the real-camera tests with $vpy -m pytest tests/real_camera"
cat <<EOF
export OPENSCAN_PI_LIBCAMERA_PREFIX='$prefix'
export LD_LIBRARY_PATH='$prefix/lib'"\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PYTHONPATH='$pydir'"\${PYTHONPATH:+:\$PYTHONPATH}"
export LIBCAMERA_LOG_LEVELS='*:WARN'
EOF
