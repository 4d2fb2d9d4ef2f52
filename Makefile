# mindsight-ml. `make help` lists targets; `make test` is what CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Locks (requirements/*.txt) pin everything the images and `make test` install; `make lock` rewrites them
# from pyproject.toml and requirements/*.in with uv. They are complete, so installs use --no-deps.
UV ?= $(BIN)/uv
LOCK := $(UV) pip compile --quiet --python-platform x86_64-manylinux_2_28
LOCK311 := $(LOCK) --python-version 3.11

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck check bench bench-whole bench-gpu bench-caption bench-lanes bench-people bench-router clean docker-build demo gpu-up k8s-render image-sizes lock
TARGET ?= full

help: ## List targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/test.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps -r requirements/test.txt
	$(BIN)/pip install -q --no-deps -e .
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

bench: $(STAMP) ## Throughput/latency benchmark, the whole photo, fresh-upload latency during a bulk burst, router rate (docs/performance.md)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.run --whole
	$(BIN)/python -m benchmarks.run --lanes
	$(BIN)/python -m benchmarks.router_bench

bench-whole: $(STAMP) ## Only the whole photo: CLIP ViT-L/14 + BLIP-base captions + faces, baselines and our layouts
	$(BIN)/python -m benchmarks.run --whole

bench-gpu: $(STAMP) ## The whole photo on an NVIDIA GPU: the legacy loop on CUDA vs ours as deploy/docker-compose.gpu.yml runs them
	$(BIN)/python -m benchmarks.run --whole --gpu --photos 24

bench-lanes: $(STAMP) ## Only the lane latency: uploads during a 1,000-photo bulk burst, lanes on and off
	$(BIN)/python -m benchmarks.run --lanes

bench-caption: $(STAMP) ## ms per BLIP caption, fp32 vs int8, BLIP-base shapes (docs/performance.md)
	$(BIN)/python -m benchmarks.caption_bench

bench-router: $(STAMP) ## Router rate: 20,000 photo payloads to RQ jobs, no workers; one router and two (docs/performance.md)
	$(BIN)/python -m benchmarks.router_bench

bench-people: $(STAMP) ## People clustering at 10k/50k/200k faces + an incremental run (docs/performance.md)
	$(BIN)/python -m benchmarks.people_bench

docker-build: ## Build an image: make docker-build TARGET=slim|full|cuda
	docker build -f deploy/docker/Dockerfile --target $(TARGET) -t mindsight-ml:0.1.0-$(TARGET) .

demo: ## docker compose with the reference gallery and sample photos (needs ACCESS_TOKEN in .env)
	docker compose --profile demo up --build

gpu-up: ## docker compose on an NVIDIA GPU
	docker compose -f docker-compose.yml -f deploy/docker-compose.gpu.yml up

lock: $(STAMP) ## Re-resolve requirements/*.txt (slim, full, cuda, dashboard, test) from pyproject.toml with uv
	$(LOCK311) pyproject.toml -o requirements/slim.txt
	$(LOCK311) pyproject.toml requirements/dashboard.in -o requirements/dashboard.txt
	$(LOCK311) pyproject.toml --extra torch --extra faces requirements/torch.in requirements/images.in \
		--excludes requirements/excludes-cpu.txt -o requirements/full.txt
	$(LOCK) --python-version 3.12 pyproject.toml --extra torch --extra faces requirements/torch.in \
		requirements/images.in requirements/cuda.in --excludes requirements/excludes-cuda.txt \
		-o requirements/cuda.txt
	$(LOCK311) pyproject.toml --all-extras requirements/torch.in requirements/dashboard.in \
		--excludes requirements/excludes-test.txt -o requirements/test.txt

k8s-render: ## Print the Kubernetes manifests (base and GPU overlay; needs kubectl)
	kubectl kustomize deploy/k8s/base
	kubectl kustomize deploy/k8s/overlays/gpu

image-sizes: $(STAMP) ## Estimate the Docker image sizes from installed packages
	$(BIN)/python deploy/docker/estimate_sizes.py

clean: ## Remove caches and local state (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var
