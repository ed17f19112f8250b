# tsretrain: two commands on a fresh machine:  make demo  (install + run the embedded default job)
#                                              make test  (install + lint, type-check and test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-run
WORKERS ?= 0
STAMP := $(VENV)/.installed

.PHONY: named install demo screenshots demo-ts90 test lint typecheck unit mutation bench clean workflow images kind-up kind-down submit infer watch logs lock

# The whole dependency tree comes from requirements/dev.txt (`make lock`), every file checked against its hash.
# torch (its CPU build) is installed first, alone, so that nothing later lets pip choose another (CUDA) build.
# The field's DICOM tools that the tests check exports with (dciodvfy from dicom3tools, plastimatch) come from
# Debian; without root or apt they are named and the tests that need them skip, saying so.
SYSTEM_TOOLS := dicom3tools plastimatch
$(STAMP): pyproject.toml requirements/dev.txt
	@if command -v dciodvfy >/dev/null && command -v plastimatch >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_TOOLS) >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_TOOLS) >/dev/null; } \
	  || echo "note: could not install $(SYSTEM_TOOLS) (Debian packages); their checks will be skipped"; \
	else echo "note: install the Debian packages $(SYSTEM_TOOLS) for the DICOM export checks (they are skipped)"; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python requirements/lock.py only requirements/dev.txt torch > $(VENV)/torch.txt
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(VENV)/torch.txt
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tsretrain run --run-dir $(DEMO_DIR)

screenshots: install  ## the demo's report in headless Chromium at 800 and 1400 px (fails when anything is cut off)
	$(BIN)/python docs/screenshots.py --report $(DEMO_DIR)/report/report.html --out docs

demo-ts90: install  ## the 90-label run, TotalSegmentator on STAND-IN weights (built once into standin-weights/)
	test -f standin-weights/STAND-IN.json || $(BIN)/tsretrain standin-weights --out standin-weights
	$(BIN)/tsretrain run --run-dir $(DEMO_DIR)-ts90 --config pipelines/demo-ts90.yaml

lint: install
	$(BIN)/ruff check src tests bench pipelines docs requirements
	$(BIN)/ruff format --check src tests bench pipelines docs requirements

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -n 2 --durations=25

test: lint typecheck unit

# Mutation testing of the core (long; not part of `make test`): modules and tests in pyproject's [tool.mutmut],
# scores and surviving mutants in docs/testing.md.
# One torch thread: mutmut forks a child per mutant, and a forked child of a process whose thread pool has started
# can hang (the trainers' loss mutants then time out instead of being judged).
mutation: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run
	$(BIN)/mutmut results

bench: install
	$(BIN)/python bench/convert.py --out docs/benchmarks.md

# Re-resolve the hashed locks requirements/{dev,cpu,gpu,pseudolabel,build}.txt from pyproject.toml and the torch
# pins of requirements/*.in (tests/pipeline/test_locks.py fails while one is stale). Pins that still fit are kept:
# make lock UPGRADE=1 moves everything to the newest releases; make lock LOCKS="gpu pseudolabel" re-locks those.
# The indexes are pip's own (pip config list); the hashes are those of every file of each pinned release there.
LOCK_VENV ?= .venv-lock
LOCKS ?=
UPGRADE ?=
$(LOCK_VENV)/.installed:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip==26.3 pip-tools==7.6.2
	touch $@

lock: $(LOCK_VENV)/.installed
	$(LOCK_VENV)/bin/python requirements/lock.py compile $(if $(UPGRADE),--upgrade) $(LOCKS)

# ---- cluster path -------------------------------------------------------------------------------------
TAG ?= 0.1.0
PARAMS ?=
WORKFLOW ?=
# Submitting and watching need only the standard library: a light environment without the torch stack.
SUBMIT_VENV ?= .venv-submit
SUBMIT := $(SUBMIT_VENV)/bin/python -m tsretrain.cluster
export PARAMS

$(SUBMIT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SUBMIT_VENV)
	$(SUBMIT_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

workflow: install  ## re-render the WorkflowTemplate into the chart (review the diff)
	$(BIN)/python pipelines/workflow.py training > helm/tsretrain/files/workflowtemplate.yaml
	$(BIN)/python pipelines/workflow.py infer > helm/tsretrain/files/infer-workflowtemplate.yaml
	cp src/tsretrain/labels/dictionaries/*.yaml helm/tsretrain/files/dictionaries/

# The images build with the first of docker, podman and buildah found (or ENGINE=...), from the package index
# and base image named here: behind a mirror or air-gapped, point these at it (images/README.md). Every package
# is checked against the hashes of requirements/*.txt whichever index serves it.
# docker counts only when its daemon answers (a docker client alone cannot build); found once, when first needed.
FIND_ENGINE = $(firstword $(if $(shell docker version --format '{{.Server.Version}}' 2>/dev/null),docker) \
	$(foreach e,podman buildah,$(if $(shell command -v $(e) 2>/dev/null),$(e))))
ENGINE ?= $(eval ENGINE := $(FIND_ENGINE))$(ENGINE)
ENGINE_FLAGS ?=
BASE_IMAGE ?= python:3.11.10-slim-bookworm
PIP_INDEX_URL ?= https://pypi.org/simple
PIP_EXTRA_INDEX_URL ?=
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
BUILD_ARGS = --build-arg "BASE_IMAGE=$(BASE_IMAGE)" --build-arg "PIP_INDEX_URL=$(PIP_INDEX_URL)" \
	--build-arg "PIP_EXTRA_INDEX_URL=$(PIP_EXTRA_INDEX_URL)"
BUILD = $(ENGINE) build $(ENGINE_FLAGS) $(BUILD_ARGS)

FAMILIES := cpu gpu pseudolabel
IMAGES ?= $(FAMILIES)
IMAGE_ARGS_cpu = --build-arg "TORCH_INDEX_URL=$(TORCH_INDEX_URL)"
.PHONY: $(addprefix image-,$(FAMILIES))

images: $(addprefix image-,$(IMAGES))  ## build the step images (docker, podman or buildah); make images IMAGES=cpu: one

$(addprefix image-,$(FAMILIES)): image-%:
	@test -n "$(ENGINE)" || { echo "make images needs a container engine: install docker (with its daemon running)," \
	  "podman or buildah (Debian: apt-get install podman), or name one: make images ENGINE=/path/to/podman" >&2; exit 2; }
	$(BUILD) $(IMAGE_ARGS_$*) -f images/$*.Dockerfile -t tsretrain-$*:$(TAG) .

kind-up: images  ## kind with GPU passthrough, Argo Workflows, dev S3 and our chart
	deploy/kind/up.sh $(TAG)

kind-down:
	deploy/kind/down.sh

# PARAMS is split like a shell command line: make submit PARAMS="input-prefix=s3://... folds='[\"0\", \"1\"]'"
submit: $(SUBMIT_VENV)/.installed  ## (ARGO_SERVER, ARGO_TOKEN, ARGO_NAMESPACE)
	$(SUBMIT) submit --parameters "$$PARAMS"

# Contour new patients with a run's package: make infer PARAMS="input-prefix=s3://.../new model=s3://.../export/X.zip"
infer: $(SUBMIT_VENV)/.installed  ## the inference WorkflowTemplate (ARGO_SERVER, ARGO_TOKEN, ARGO_NAMESPACE)
	$(SUBMIT) submit --template tsretrain-infer --parameters "$$PARAMS"

named:  # before anything is installed: watch and logs need the run's name
	@test -n "$(WORKFLOW)" || { echo "name the run: make $(MAKECMDGOALS) WORKFLOW=tsretrain-xxxxx (make submit printed it)" >&2; exit 2; }

watch: named $(SUBMIT_VENV)/.installed  ## make watch WORKFLOW=tsretrain-xxxxx
	$(SUBMIT) watch $(WORKFLOW)

logs: named $(SUBMIT_VENV)/.installed  ## make logs WORKFLOW=tsretrain-xxxxx
	$(SUBMIT) logs $(WORKFLOW)

clean:
	rm -rf $(DEMO_DIR) $(SUBMIT_VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .ruff_cache
