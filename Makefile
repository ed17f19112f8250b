# tsretrain: two commands on a fresh machine:  make demo  (install + run the embedded default job)
#                                              make test  (install + lint, type-check and test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-run
DEMO_CASES ?= 8
WORKERS ?= 0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

# torch is pinned and installed first so that nothing later lets pip choose another (CUDA) build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tsretrain synth $(DEMO_DIR)/cohort --cases $(DEMO_CASES) --edge-cases --seed 0
	$(BIN)/tsretrain scan $(DEMO_DIR)/cohort/dicom --out $(DEMO_DIR)/scan --workers $(WORKERS)
	$(BIN)/tsretrain convert $(DEMO_DIR)/cohort/dicom --out $(DEMO_DIR)/converted \
		--inventory $(DEMO_DIR)/scan/inventory.json --workers $(WORKERS)
	@echo ""
	@echo "Outputs:"
	@echo "  synthetic DICOM-RT cohort : $(DEMO_DIR)/cohort/dicom  (ground truth in $(DEMO_DIR)/cohort/truth)"
	@echo "  case listing              : $(DEMO_DIR)/converted/cases.csv"
	@echo "  converted cases           : $(DEMO_DIR)/converted/cases/<case>/{<case>_0000.nii.gz,<case>.nii.gz,manifest.json}"

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -n 2 --durations=10

test: lint typecheck unit

bench: install
	$(BIN)/python bench/convert.py --out docs/benchmarks.md

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
