# CPU step family: scan, convert, split, assemble, preprocess, evaluate, report, status.
# Build from the repository root:  make images  (or: docker build -f images/cpu.Dockerfile -t tsretrain-cpu:TAG .)
# Every Python package is installed from requirements/cpu.txt (`make lock`), each file checked against its hash.
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
# torch's CPU build (no CUDA libraries) is not on PyPI: it comes from this index alone
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY requirements/cpu.txt requirements/lock.py /tmp/lock/
RUN python /tmp/lock/lock.py only /tmp/lock/cpu.txt torch > /tmp/lock/torch.txt \
    && pip install --no-cache-dir --require-hashes --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/lock/torch.txt \
    && pip install --no-cache-dir --require-hashes -r /tmp/lock/cpu.txt && rm -rf /tmp/lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 tsretrain
USER 10001
WORKDIR /home/tsretrain
ENTRYPOINT ["tsretrain"]
CMD ["--help"]
