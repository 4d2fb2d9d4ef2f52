# mindsight-ml. `make help` lists targets; `make test` is what CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1: the pair open_clip's torchvision import works with on x86_64 here.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck check bench bench-people clean docker-build demo gpu-up k8s-render image-sizes
TARGET ?= full

help: ## List targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

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

bench-people: $(STAMP) ## People clustering at 10k/50k/200k faces + an incremental run (docs/performance.md)
	$(BIN)/python -m benchmarks.people_bench

docker-build: ## Build an image: make docker-build TARGET=slim|full|cuda
	docker build -f deploy/docker/Dockerfile --target $(TARGET) -t mindsight-ml:0.1.0-$(TARGET) .

demo: ## docker compose with the reference gallery and sample photos (needs ACCESS_TOKEN in .env)
	docker compose --profile demo up --build

gpu-up: ## docker compose on an NVIDIA GPU
	docker compose -f docker-compose.yml -f deploy/docker-compose.gpu.yml up

k8s-render: ## Print the Kubernetes manifests (base and GPU overlay; needs kubectl)
	kubectl kustomize deploy/k8s/base
	kubectl kustomize deploy/k8s/overlays/gpu

image-sizes: $(STAMP) ## Estimate the Docker image sizes from installed packages
	$(BIN)/python deploy/docker/estimate_sizes.py

clean: ## Remove caches and local state (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var
