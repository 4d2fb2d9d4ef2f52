# mindsight-ml. `make help` lists targets; `make test` is what CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1: the pair open_clip's torchvision import works with on x86_64 here.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck check bench clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[torch,faces,test]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with every extra

run: $(STAMP) ## Start the whole stack locally (embedded Redis if needed), enqueue samples, show results
	$(BIN)/mindsight dev run

test: $(STAMP) ## Run the whole test suite (slow suites included)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## Run the suite without the slow marker
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy shared workers services mindsight

check: lint typecheck test ## lint + typecheck + test

bench: $(STAMP) ## Throughput/latency benchmark (docs/performance.md)
	$(BIN)/python -m benchmarks.run

clean: ## Remove caches and local state (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var
