#!/usr/bin/env bash
# Build the CPU image with buildah, without Docker or a registry (images/build-local.sh: a local Debian bookworm
# base with Debian's CPython 3.11, torch's CPU wheel served from a local file, every other package from pip's
# index). Then its size, the CUDA libraries it carries, and `tsretrain --help` as uid 10001.
# Root, with buildah and mmdebstrap (apt-get install buildah mmdebstrap).
#   bench/images.sh [TORCH_WHEEL]      (default: the torch-2.13.0+cpu wheel in pip's find-links, /opt/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=${1:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
# The base (built once per machine, its time printed then), then the CPU image (images/build-local.sh).
images/build-local.sh bench cpu "$wheel"
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
