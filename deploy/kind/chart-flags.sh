#!/usr/bin/env bash
# The values kind-up installs the tsretrain chart with. Sourced by up.sh; the tests render the chart with
# exactly these flags. Strings go through --set-string: plain --set turns "true" and a numeric tag into a
# boolean and a number, which the chart's schema rejects.
# Usage: tsretrain_chart_flags TAG ACCESS_KEY SECRET_KEY   (fills the array chart_flags)
# shellcheck source=deploy/kind/versions.env
source "$(dirname "${BASH_SOURCE[0]}")/versions.env"

tsretrain_chart_flags() {
  local tag="$1" access_key="$2" secret_key="$3"
  # shellcheck disable=SC2034  # read by the caller
  chart_flags=(
    --set-string "images.cpu.tag=$tag" --set-string "images.gpu.tag=$tag"
    --set-string "images.pseudolabel.tag=$tag"
    --set devS3.enabled=true
    --set-string "devS3.image.repository=$S3_IMAGE_REPOSITORY" --set-string "devS3.image.tag=$S3_IMAGE_TAG"
    --set s3.createSecret=true
    --set-string "s3.devCredentials.accessKey=$access_key" --set-string "s3.devCredentials.secretKey=$secret_key"
    --set-string "gpu.nodeSelector.tsretrain/gpu=true"
  )
}
