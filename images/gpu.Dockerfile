# GPU step family: train and predict (nnU-Net v2 on CUDA).
# Build from the repository root:  make images  (or: docker build -f images/gpu.Dockerfile -t tsretrain-gpu:TAG .)
# torch 2.8.0 wheels bundle CUDA 12.8 (driver >= 570); torch 2.9.* is avoided (3-D convolutions ~4x slower).
# Every Python package is installed from requirements/gpu.txt (`make lock`), each file checked against its hash.
ARG BASE_IMAGE=python:3.11.10-slim-bookworm
FROM ${BASE_IMAGE} AS build
# pip reads the package index from these (a mirror or an air-gapped index: make images PIP_INDEX_URL=...)
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
WORKDIR /src
COPY requirements/build.txt /tmp/build.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/build.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# The CUDA stack first (requirements/cuda.txt: torch, triton, nvidia-*), the same instructions in the GPU and
# pseudo-label images: one layer, built, stored and pulled once for both.
COPY requirements/cuda.txt /tmp/cuda.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/cuda.txt && rm /tmp/cuda.txt
# nnU-Net compiles the network with torch.compile on CUDA (its default, ~10-20 % faster training over the many
# epochs of a real run); Triton builds a small C launcher at run time, which needs a C compiler and the libc
# headers. Debian point releases update both: not pinned.
ENV nnUNet_compile=true
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY requirements/gpu.txt /tmp/gpu.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/gpu.txt && rm /tmp/gpu.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 tsretrain
USER 10001
WORKDIR /home/tsretrain
ENTRYPOINT ["tsretrain"]
CMD ["--help"]
