# tsretrain: two commands on a fresh machine:  make demo  (install + run the embedded default job)
#                                              make test  (install + lint, type-check and test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-run
WORKERS ?= 0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

# torch is pinned and installed first so that nothing later lets pip choose another (CUDA) build.
$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tsretrain run --run-dir $(DEMO_DIR)
	@echo ""
	@echo "Outputs (in $(DEMO_DIR)/):"
	@echo "  cohort/dicom              synthetic DICOM-RT cohort (ground truth in cohort/truth)"
	@echo "  converted/cases.csv       case listing: status, reason and advice for every patient"
	@echo "  converted/cases/<case>/   CT and label map NIfTI, manifest.json"
	@echo "  split/split_report.md     the leak-free split"
	@echo "  nnunet/                   nnU-Net raw, preprocessed and results (3d_tiny, folds 0 and 1)"
	@echo "  predictions/test/         fold-ensemble predictions of the held-out test cases"
	@echo "  evaluation/               per_case.csv, per_label.csv, summary.json"
	@echo "  report/report.html        the run report (report.md beside it)"

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
