#!/usr/bin/env bash
# The GPU check of the nnU-Net stage, sized for one 10-minute device call. Needs tsretrain installed with a
# CUDA torch (e.g. inside the GPU image). Writes its figures into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/gpu_epoch.py --out docs/benchmarks.md "$@"
