# Pseudo-label step: TotalSegmentator on CUDA. Weights are mounted at run time (never baked in), read-only:
# the step passes --weights /weights and TotalSegmentator keeps its config.json in the writable home.
# Build from the repository root:  docker build -f images/pseudolabel.Dockerfile -t tsretrain-pseudolabel:TAG .
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir build==1.2.2 && python -m build --wheel --outdir /wheels .

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN pip install --no-cache-dir torch==2.8.0 torchvision==0.23.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[pseudolabel]" torch==2.8.0 torchvision==0.23.0 \
    && rm -rf /wheels && useradd --create-home --uid 10001 tsretrain
USER 10001
WORKDIR /home/tsretrain
ENTRYPOINT ["tsretrain"]
CMD ["pseudolabel", "--help"]
