#!/usr/bin/env bash
# Build the CPU image with buildah, without Docker or a registry: a local Debian bookworm base with Debian's
# CPython 3.11 (mmdebstrap), torch's CPU wheel served from a local folder as TORCH_INDEX_URL, every other package
# from PyPI (PIP_INDEX_URL). Then its size, the CUDA libraries it carries, and `tsretrain --help` as uid 10001.
# Root, with buildah and mmdebstrap (apt-get install buildah mmdebstrap).
#   bench/images.sh [TORCH_WHEEL]      (default: the torch-2.13.0+cpu wheel in pip's find-links, /opt/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=${1:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
work=$(mktemp -d)
base=localhost/tsretrain-base-bookworm:3.11

# The base: Debian's python3.11 in a virtual environment first on PATH (python, pip: the python image's
# interface), and this machine's CA bundle (a TLS-inspecting proxy's CA, as a hospital's base image would carry).
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

# The torch index: one project page with the wheel, served on loopback (chroot isolation shares the network).
mkdir -p "$work/index/torch"
ln -s "$wheel" "$work/index/torch/"
name=$(basename "$wheel")
printf '<a href="%s">%s</a>\n' "${name//+/%2B}" "$name" > "$work/index/torch/index.html"
python3 -m http.server --bind 127.0.0.1 8765 --directory "$work/index" >/dev/null 2>&1 &
server=$!
trap 'kill $server; rm -rf "$work"' EXIT
sleep 1

start=$(date +%s)
make images IMAGES=cpu TAG=bench ENGINE=buildah ENGINE_FLAGS="--isolation chroot" BASE_IMAGE="$base" \
  TORCH_INDEX_URL=http://127.0.0.1:8765/
echo "CPU image build: $(($(date +%s) - start)) s"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'tsretrain-(cpu|base)'

ctr=$(buildah from localhost/tsretrain-cpu:bench)
root=$(buildah mount "$ctr")
echo "CUDA libraries in the image:"
find "$root" -name '*.so*' | grep -iE 'cuda|cudnn|cublas|nccl|nvjpeg|nvrtc|libcu' | sed "s|^$root||" || echo none
echo "nvidia packages: $(find "$root" -maxdepth 6 -type d -name 'nvidia*' | wc -l)"
echo "largest packages (MB):"
du -sm "$root"/opt/python/lib/python3.11/site-packages/* | sort -n | tail -8 | sed "s|$root/opt/python/lib/python3.11/site-packages/||"
buildah umount "$ctr" >/dev/null
buildah run --isolation chroot "$ctr" -- sh -c 'id -u; cd && tsretrain --help | head -3'
buildah rm "$ctr" >/dev/null
