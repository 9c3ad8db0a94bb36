# Everything a person or CI runs. `make help` lists the targets.
SHELL := /bin/bash
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never
PY := .venv/bin/python
PYTEST_ARGS ?=

# images: `make images REGISTRY=registry.example.com/power-usage TAG=0.1.0` (any engine with docker's CLI)
REGISTRY ?= power-usage
TAG ?= dev
CONTAINER_ENGINE ?= docker
SERVICES := joiner message-gen message-proc

.PHONY: bench help setup run test test-unit test-contract test-e2e test-deploy images lint-docker clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install what is missing: uv, a C compiler, the Python deps, daprd and the dapr CLI (pinned), redis-server, rabbitmq-server, kustomize (pinned)
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@bash scripts/ensure-compiler.sh python3
	@$(UV) sync --frozen --quiet
	@$(PY) -m devstack install
	@bash deploy/install-kustomize.sh

run: setup ## the whole pipeline; prints billable-proc's "Data received" lines until Ctrl-C
	@$(PY) -m devstack run $(if $(WINDOW),--window $(WINDOW))

test: setup ## every test: unit, contract, deploy and end-to-end (real daprd, Redis, RabbitMQ)
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup ## unit tests only
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-contract: setup ## in-process contract tests of each service
	@$(PY) -m pytest tests/contract $(PYTEST_ARGS)

test-e2e: setup ## end-to-end tests only
	@$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test-deploy: setup ## Dockerfiles, Kubernetes manifests and the migration of the original manifests
	@$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

images: ## build the three service images as REGISTRY/<service>:TAG (default power-usage/…:dev), from the repository root
	@for svc in $(SERVICES); do \
		echo "[images] $(REGISTRY)/$$svc:$(TAG)"; \
		$(CONTAINER_ENGINE) build -f services/$$svc/Dockerfile -t $(REGISTRY)/$$svc:$(TAG) . || exit 1; \
	done

lint-docker: setup ## hadolint on every Dockerfile
	@.venv/bin/hadolint services/*/Dockerfile

bench: setup ## benchmarks: the join engine (naive / engine / DuckDB), one delivery in-process, the pipeline on real Dapr
	@$(PY) bench/engine.py
	@$(PY) bench/delivery.py
	@$(PY) bench/pipeline.py

clean: ## remove the venv and run directories
	rm -rf .venv .devstack .pytest_cache
