#!/usr/bin/env bash
# Bring up a kind cluster with GPU passthrough, Argo Workflows, a dev S3 server and tsretrain.
# Usage: deploy/kind/up.sh TAG   (images tsretrain-{cpu,gpu,pseudolabel}:TAG must exist locally; make images)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=deploy/kind/chart-flags.sh
source "$here/chart-flags.sh"   # also sources versions.env
tag="${1:?usage: up.sh TAG}"
cluster="${KIND_CLUSTER:-tsretrain}"
namespace="${NAMESPACE:-argo}"
access_key="${S3_ACCESS_KEY:-tsretrain}"
secret_key="${S3_SECRET_KEY:-tsretrain-dev-secret}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing prerequisite: $1 ($2)" >&2; exit 1; }; }
need docker "Docker engine"
need kind "https://kind.sigs.k8s.io"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh"
need nvkind "go install github.com/NVIDIA/nvkind/cmd/nvkind@latest"
need nvidia-ctk "NVIDIA Container Toolkit"
if ! grep -Eq '^\s*accept-nvidia-visible-devices-as-volume-mounts\s*=\s*true' /etc/nvidia-container-runtime/config.toml; then
  echo "set accept-nvidia-visible-devices-as-volume-mounts = true in /etc/nvidia-container-runtime/config.toml" >&2
  echo "  sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" >&2
  exit 1
fi

echo "== cluster $cluster"
if ! kind get clusters | grep -qx "$cluster"; then
  nvkind cluster create --name "$cluster" --image "$KIND_NODE_IMAGE" --config-template "$here/cluster.yaml"
fi
kubectl config use-context "kind-$cluster"

echo "== NVIDIA GPU Operator (driver and toolkit from the host)"
helm repo add nvidia https://helm.ngc.nvidia.com/nvidia --force-update >/dev/null
helm upgrade --install gpu-operator nvidia/gpu-operator --namespace gpu-operator --create-namespace \
  --version "$GPU_OPERATOR_CHART_VERSION" --set driver.enabled=false --set toolkit.enabled=false --wait

echo "== Argo Workflows"
helm repo add argo https://argoproj.github.io/argo-helm --force-update >/dev/null
helm upgrade --install argo-workflows argo/argo-workflows --namespace "$namespace" --create-namespace \
  --version "$ARGO_WORKFLOWS_CHART_VERSION" --set-string "images.tag=$ARGO_WORKFLOWS_VERSION" \
  --set 'server.authModes={server}' --set server.secure=false --wait

echo "== images"
for family in cpu gpu pseudolabel; do
  kind load docker-image "tsretrain-$family:$tag" --name "$cluster"
done

echo "== tsretrain chart with a dev S3 server"
tsretrain_chart_flags "$tag" "$access_key" "$secret_key"
helm upgrade --install tsretrain "$root/helm/tsretrain" --namespace "$namespace" "${chart_flags[@]}" --wait
kubectl --namespace "$namespace" rollout status deployment/tsretrain-s3 --timeout=180s
kubectl --namespace "$namespace" run tsretrain-make-bucket --rm -i --restart=Never --image "tsretrain-cpu:$tag" \
  --env AWS_ENDPOINT_URL=http://tsretrain-s3:8333 --env "AWS_ACCESS_KEY_ID=$access_key" \
  --env "AWS_SECRET_ACCESS_KEY=$secret_key" --command -- tsretrain store mb s3://tsretrain

echo "== ready"
echo "Argo UI:  kubectl -n $namespace port-forward svc/argo-workflows-server 2746:2746  then http://localhost:2746"
echo "Submit:   export ARGO_SERVER=http://localhost:2746 ARGO_NAMESPACE=$namespace; make submit"
