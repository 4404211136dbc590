#!/usr/bin/env bash
# Set up (Debian packages when root, .venv, Cython build) and run the whole test suite:
# lint, the host suite (both HTTP/2 backends, interop with nghttp2 tools, curl, grpcio,
# HAProxy, etcd), then the kernel-SCTP suite inside a QEMU VM.  Exits non-zero on any failure.
# Extra arguments go to the host pytest run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}  # the same examples every run (tests/conftest.py)
if [ "$(id -u)" = 0 ]; then export NFMESH_REQUIRE_NATIVE=${NFMESH_REQUIRE_NATIVE:-1}; fi
bash scripts/setup.sh test
.venv/bin/nfmesh version
# the container image (tests/test_image.py runs it in a chroot): built as root when the archive
# is missing or was built from another commit; NFMESH_IMAGE=skip leaves it out (that test skips)
if [ "$(id -u)" = 0 ] && [ "${NFMESH_IMAGE:-build}" != skip ]; then
  version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
  if [ "$(cat "dist/nfmesh-$version.oci.tar.source" 2>/dev/null)" != "$(git rev-parse HEAD 2>/dev/null)" ]; then
    echo "== container image (scripts/image.sh)"
    bash scripts/image.sh
  fi
fi
echo "== ruff"
.venv/bin/ruff check .
echo "== host suite"
rc=0
.venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@" || rc=$?
[ $rc = 5 ] && { echo "no host test ran: that is a failure"; rc=1; }
echo "== kernel SCTP suite (QEMU VM)"
vrc=0
if [ -f scripts/sctp_vm.py ]; then
  .venv/bin/python scripts/sctp_vm.py -- "$root/.venv/bin/python" -m pytest -p no:cacheprovider \
      -m sctp tests/sctp -q || vrc=$?
else
  echo "scripts/sctp_vm.py missing"; vrc=1
fi
echo "host suite rc=$rc, sctp suite rc=$vrc"
[ $rc = 0 ] && [ $vrc = 0 ]
