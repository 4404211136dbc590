#!/usr/bin/env bash
# Build the nfmesh container image without a registry or a container runtime:
#
#   1. wheels: nfmesh with its Cython hot paths (built here, on Debian 12's Python 3.11, the
#      same as the image's) and every dependency, into a scratch folder;
#   2. a Debian 12 root filesystem from Debian packages (mmdebstrap): python3, libnghttp2,
#      ca-certificates, no apt, no compiler, no docs; a venv /opt/nfmesh with the wheels
#      installed offline, pycrate's ASN.1 directory cut to the NGAP module nfmesh imports (the
#      other 80 specs are 250 MB); user nfmesh (10001:10001) as in the chart;
#   3. packed as one layer of an OCI image (umoci) with its config (user 10001, entrypoint
#      nfmesh, cmd run, PATH), then written as an OCI archive by skopeo:
#      dist/nfmesh-<version>.oci.tar, named ghcr.io/nfmesh/nfmesh:<version> (the chart's default
#      image and tag), loadable with `podman load -i` / `docker load -i` (Docker 25+), or pushed
#      with `skopeo copy oci-archive:dist/nfmesh-<version>.oci.tar docker://REGISTRY/nfmesh:<version>`.
#
# Needs root (mmdebstrap's root mode, chroot hooks) and the Debian packages mmdebstrap, umoci,
# skopeo (installed when missing), a Debian mirror and PyPI.  tests/test_image.py unpacks the
# archive and runs it in a chroot.  The Containerfile builds the same image with Podman/Docker.
#
#   bash scripts/image.sh [--out DIR] [--mirror URL] [--worktree]
#
# The app comes from the commit checked out (git archive HEAD), so the image is what the
# history says; --worktree takes the working tree instead (tracked and untracked files that
# git does not ignore), to try changes not yet committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf 'image: %s\n' "$*" >&2; }
out=dist
mirror=http://deb.debian.org/debian
source=head
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --worktree) source=worktree; shift ;;
    *) echo "usage: scripts/image.sh [--out DIR] [--mirror URL] [--worktree]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { say "needs root (mmdebstrap root mode, chroot hooks)"; exit 1; }
start=$(date +%s)

need=()
for p in mmdebstrap umoci skopeo python3-venv python3-dev gcc libnghttp2-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
ref="ghcr.io/nfmesh/nfmesh:$version"
work=$(mktemp -d /tmp/nfmesh-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/wheels"

# 1. wheels (a throw-away build venv: the checkout's .venv is left alone)
say "building wheels (nfmesh $version with its Cython modules, and its dependencies)"
python3 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q --disable-pip-version-check --upgrade pip wheel setuptools Cython
# a clean copy of the sources: no .venv, no in-place .so built for another purpose
mkdir -p "$work/src"
if [ "$source" = head ]; then
  git archive --format=tar HEAD | tar -xf - -C "$work/src"
  say "sources: commit $(git rev-parse --short HEAD)"
else
  # (a tracked file deleted in the working tree is left out, not an error)
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$work/src"
  say "sources: the working tree"
fi
NFMESH_REQUIRE_NATIVE=1 "$work/build-venv/bin/pip" wheel -q --disable-pip-version-check \
    --no-build-isolation -w "$work/wheels" "$work/src[otel]" >"$work/wheel.log" 2>&1 \
  || { tail -n 30 "$work/wheel.log" >&2; say "wheel build failed"; exit 1; }

# 2. the root filesystem, as a tarball: Debian packages, then the app installed offline
say "root filesystem from Debian packages (mmdebstrap, $mirror)"
cat >"$work/dpkg-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
path-include=/usr/share/doc/*/copyright
EOF
mmdebstrap --quiet --mode=root --variant=essential --format=tar \
  --include=python3,python3-venv,libnghttp2-14,ca-certificates \
  --dpkgopt="$work/dpkg-nodoc" \
  --customize-hook="mkdir -p \"\$1/tmp/wheels\"" \
  --customize-hook="copy-in $work/wheels/. /tmp/wheels" \
  --customize-hook='chroot "$1" python3 -m venv /opt/nfmesh' \
  --customize-hook='chroot "$1" /opt/nfmesh/bin/pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheels --no-compile "nfmesh[otel]"' \
  --customize-hook='chroot "$1" /opt/nfmesh/bin/pip uninstall -q -y pip setuptools' \
  --customize-hook='for d in "$1"/opt/nfmesh/lib/python3*/site-packages/pycrate_asn1dir; do find "$d" -maxdepth 1 -name "*.py" ! -name NGAP.py ! -name __init__.py -delete; rm -rf "$d/__pycache__"; done' \
  --customize-hook='chroot "$1" /opt/nfmesh/bin/python -m compileall -q -j 2 /opt/nfmesh/lib >/dev/null || true' \
  --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/usr/lib/python3/dist-packages/pip "$1"/usr/share/python-wheels' \
  --customize-hook='echo "nfmesh:x:10001:10001:nfmesh:/home/nfmesh:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "nfmesh:x:10001:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/home/nfmesh" "$1/etc/nfmesh" && chown 10001:10001 "$1/home/nfmesh" && chmod 1777 "$1/tmp"' \
  bookworm "$work/rootfs.tar" "$mirror"

# 3. OCI image: one layer, the config, then an archive with the chart's image name
say "packing the OCI image (umoci, skopeo)"
layout="$work/oci"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci raw add-layer --image "$layout:$version" "$work/rootfs.tar"
umoci config --image "$layout:$version" \
  --config.user 10001:10001 \
  --config.entrypoint nfmesh --config.cmd run \
  --config.workingdir /home/nfmesh \
  --config.env PATH=/opt/nfmesh/bin:/usr/local/bin:/usr/bin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 \
  --config.exposedports 8080/tcp --config.exposedports 9090/tcp --config.exposedports 9901/tcp \
  --config.label "org.opencontainers.image.title=nfmesh" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.source=https://github.com/nfmesh/nfmesh" \
  --architecture amd64 --os linux
umoci gc --layout "$layout"
archive="$out/nfmesh-$version.oci.tar"
rm -f "$archive"
skopeo copy --quiet "oci:$layout:$version" "oci-archive:$archive:$ref"
# what it was built from: scripts/test.sh rebuilds when this is not the commit checked out
if [ "$source" = head ]; then git rev-parse HEAD >"$archive.source"; else echo worktree >"$archive.source"; fi
size=$(du -m "$archive" | cut -f1)
say "wrote $archive ($ref, ${size} MB) in $(( $(date +%s) - start )) s"
