# Pseudo-label step: TotalSegmentator on CUDA. Weights are mounted at run time (never baked in), read-only:
# the step passes --weights /weights and TotalSegmentator keeps its config.json in the writable home.
# Build from the repository root:  make images  (or: docker build -f images/pseudolabel.Dockerfile ...)
# Every Python package (tsretrain[pseudolabel]) is installed from requirements/pseudolabel.txt (`make lock`), hashed.
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
COPY requirements/pseudolabel.txt /tmp/pseudolabel.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/pseudolabel.txt && rm /tmp/pseudolabel.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl \
    && rm -rf /wheels && useradd --create-home --uid 10001 tsretrain
USER 10001
WORKDIR /home/tsretrain
ENTRYPOINT ["tsretrain"]
CMD ["pseudolabel", "--help"]
