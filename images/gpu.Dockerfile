# GPU step family: train and predict (nnU-Net v2 on CUDA).
# Build from the repository root:  docker build -f images/gpu.Dockerfile -t tsretrain-gpu:TAG .
# torch 2.8.0 wheels bundle CUDA 12.8 (driver >= 570); torch 2.9.* is avoided (3-D convolutions ~4x slower).
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir build==1.2.2 && python -m build --wheel --outdir /wheels .

FROM python:3.11.10-slim-bookworm
# nnU-Net compiles the network with torch.compile on CUDA (its default, ~10-20 % faster training over the many
# epochs of a real run); Triton builds a small C launcher at run time, which needs a C compiler and the libc
# headers. Debian point releases update both: not pinned.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 nnUNet_compile=true
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir torch==2.8.0 torchvision==0.23.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl torch==2.8.0 torchvision==0.23.0 && rm -rf /wheels \
    && useradd --create-home --uid 10001 tsretrain
USER 10001
WORKDIR /home/tsretrain
ENTRYPOINT ["tsretrain"]
CMD ["--help"]
