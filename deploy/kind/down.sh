#!/usr/bin/env bash
# Delete the kind cluster created by up.sh (images and data in it are gone with it).
set -euo pipefail
kind delete cluster --name "${KIND_CLUSTER:-tsretrain}"
