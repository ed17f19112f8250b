#!/usr/bin/env bash
# Build the step images with buildah where no Docker, no registry and no PyTorch index can be reached: the base
# is a Debian bookworm root file system with Debian's CPython 3.11 (mmdebstrap, from Debian's mirror) standing in
# for python:3.11.10-slim-bookworm, torch's CPU wheel is served on loopback from a local file as TORCH_INDEX_URL,
# every other package comes from pip's index. Layers are cached (buildah --layers): a rebuild after a change
# of src/ redoes the wheel and its install only. Root, with buildah and mmdebstrap (apt-get install buildah
# mmdebstrap). The tests' image check (tests/e2e/test_cluster_run.py) and bench/images.sh build with it.
#   images/build-local.sh TAG "cpu gpu pseudolabel" [TORCH_WHEEL]
#     TORCH_WHEEL: default the torch-2.13.0+cpu wheel in pip's find-links (/opt/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?the image tag}
families=${2:-cpu gpu pseudolabel}
wheel=${3:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
base=localhost/tsretrain-base-bookworm:3.11
work=$(mktemp -d)
server=
trap '{ [ -z "$server" ] || kill "$server" 2>/dev/null; } || true; rm -rf "$work"' EXIT

# The base, once per machine: Debian's python3.11 in a virtual environment first on PATH (python, pip: the python
# image's interface), and this machine's CA bundle (a TLS-inspecting proxy's CA, as a hospital's base would carry).
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  start=$(date +%s)
  # shellcheck disable=SC2016  # mmdebstrap expands the hooks' $1 (the new root)
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$work/base.tar" "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  ctr=$(buildah from scratch)
  tar -C "$(buildah mount "$ctr")" -xf "$work/base.tar"
  buildah umount "$ctr" >/dev/null
  buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  buildah config --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
  echo "base image: $(($(date +%s) - start)) s"
fi

# The torch index: one project page with the wheel, served on loopback (chroot isolation shares the network), on
# a fixed port: the index's URL is a build argument, and a changed argument would rebuild the layers that use it.
port=${TORCH_INDEX_PORT:-48765}
mkdir -p "$work/index/torch"
ln -s "$wheel" "$work/index/torch/"
name=$(basename "$wheel")
printf '<a href="%s">%s</a>\n' "${name//+/%2B}" "$name" > "$work/index/torch/index.html"
python3 -m http.server --bind 127.0.0.1 "$port" --directory "$work/index" >/dev/null 2>&1 &
server=$!
served() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/torch/', timeout=2)" 2>/dev/null; }
for _ in $(seq 50); do served && break; sleep 0.2; done
served || { echo "the torch index could not be served on 127.0.0.1:$port (in use? TORCH_INDEX_PORT=...)" >&2; exit 1; }

for family in $families; do
  start=$(date +%s)
  make --no-print-directory images IMAGES="$family" TAG="$tag" ENGINE=buildah \
    ENGINE_FLAGS="--isolation chroot --layers" BASE_IMAGE="$base" TORCH_INDEX_URL="http://127.0.0.1:$port/"
  echo "$family image build: $(($(date +%s) - start)) s"
done
