# Everything a person or CI runs. `make help` lists the targets.
SHELL := /bin/bash
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never
PY := .venv/bin/python
PYTEST_ARGS ?=
PY_TREES := services libs tools tests bench

# images: `make images REGISTRY=registry.example.com/power-usage TAG=0.1.0` (any engine with docker's CLI)
REGISTRY ?= power-usage
TAG ?= dev
CONTAINER_ENGINE ?= docker
SERVICES := joiner message-gen message-proc

.PHONY: bench help lint format typecheck setup setup-python setup-e2e setup-browser setup-deploy setup-k8s run test test-local test-k8s k8s-up k8s-load k8s-down test-unit test-contract test-docs test-fuzz test-e2e test-faults test-deploy images lint-docker clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Each tier installs what it needs, no more: the unit, contract and docs tiers only the Python
# environment (seconds once cached), the end-to-end tier daprd and the brokers (the first daprd build
# takes minutes), the deploy tier kustomize and Dapr's CRDs.
setup: setup-e2e setup-browser setup-deploy ## install everything that is missing (what each setup-* below installs)

setup-python: ## uv, a C compiler for the joiner's C loop, the Python deps (uv sync)
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@bash scripts/ensure-compiler.sh python3
	@$(UV) sync --frozen --quiet

setup-e2e: setup-python ## + the pinned daprd and Dapr CLI, redis-server and rabbitmq-server
	@$(PY) -m devstack install

setup-browser: ## Debian's chromium and chromium-driver, for the dashboard's browser test (says what is installed)
	@bash scripts/setup-browser.sh

setup-deploy: setup-python ## + the pinned kustomize, promtool (minutes, the first time) and the Dapr and Prometheus Operator CRDs
	@bash deploy/install-kustomize.sh
	@bash scripts/install-dapr-crds.sh
	@bash deploy/install-promtool.sh
	@bash scripts/install-prometheus-operator-crds.sh
	@bash scripts/install-keda-crds.sh

run: setup-e2e ## the whole pipeline; prints the dashboard's URL and billable-proc's "Data received" lines until Ctrl-C
	@$(PY) -m devstack run $(if $(WINDOW),--window $(WINDOW))

test: lint typecheck test-local test-k8s ## every test: lint and types, the tiers of test-local, then the Kubernetes tier

lint: setup-python ## ruff: lint rules and formatting (pyproject.toml [tool.ruff]); `make format` fixes what it can
	@$(PY) -m ruff check $(PY_TREES)
	@$(PY) -m ruff format --check $(PY_TREES)

format: setup-python ## ruff: apply the formatting and the safe fixes
	@$(PY) -m ruff format $(PY_TREES)
	@$(PY) -m ruff check --fix $(PY_TREES)

typecheck: setup-python ## mypy over the libraries, services and tools (pyproject.toml [tool.mypy])
	@$(PY) -m mypy

test-local: setup ## unit, contract, docs, fuzz, deploy, end-to-end and faults (real daprd, Redis, RabbitMQ)
	@$(PY) -m pytest --ignore=tests/k8s $(PYTEST_ARGS)

test-unit: setup-python ## unit tests only (Python environment only)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-contract: setup-python ## in-process contract tests of each service (Python environment only)
	@$(PY) -m pytest tests/contract $(PYTEST_ARGS)

test-docs: setup-python ## the commands shown in README.md and docs/ (Python environment only)
	@$(PY) -m pytest tests/docs $(PYTEST_ARGS)

test-fuzz: setup-python ## hypothesis: arbitrary bytes, JSON and CloudEvents at every route (Python environment only)
	@$(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

test-e2e: setup-e2e setup-browser ## end-to-end tests only (real daprd, Redis, RabbitMQ, Dapr CLI, headless Chromium)
	@$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test-faults: setup-e2e ## faults on the real runtime, checked by numbered readings: 0 lost, 0 billed twice
	@$(PY) -m pytest tests/faults $(PYTEST_ARGS)

test-k8s: setup-k8s ## the pipeline on a real one-node Kubernetes cluster with Dapr (root; builds it the first time)
	@$(PY) -m pytest tests/k8s $(PYTEST_ARGS)

setup-k8s: setup-deploy ## + what the local cluster is made of (Kubernetes, CoreDNS, Helm, Dapr's control plane, images)
	@bash scripts/cluster/install-kubernetes.sh
	@bash scripts/cluster/install-coredns.sh
	@bash scripts/cluster/install-helm.sh
	@bash scripts/cluster/install-dapr-control-plane.sh
	@bash scripts/cluster/images.sh

k8s-up: setup-k8s ## start the local cluster with Dapr and deploy the local overlay (scripts/cluster/kubectl to look)
	@bash scripts/cluster/up.sh
	@sh deploy/overlays/dev/generate-secrets.sh
	@$(HOME)/.cache/power-usage/bin/kustomize build deploy/overlays/local | scripts/cluster/kubectl apply -f -

k8s-load: ## rebuild the images that changed and load them into the running local cluster
	@bash scripts/cluster/load-images.sh

k8s-down: ## stop the local cluster and remove everything it made
	@bash scripts/cluster/down.sh

test-deploy: setup-deploy ## Dockerfiles, Kubernetes manifests and the migration of the original manifests
	@$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

images: ## build the three service images as REGISTRY/<service>:TAG (default power-usage/…:dev), from the repository root
	@for svc in $(SERVICES); do \
		echo "[images] $(REGISTRY)/$$svc:$(TAG)"; \
		$(CONTAINER_ENGINE) build -f services/$$svc/Dockerfile -t $(REGISTRY)/$$svc:$(TAG) . || exit 1; \
	done

lint-docker: setup-python ## hadolint on every Dockerfile
	@.venv/bin/hadolint services/*/Dockerfile

bench: setup-e2e ## benchmarks: the join engine (naive / engine / DuckDB), a backfill (replay / DuckDB), one delivery in-process, the pipeline on real Dapr, a poison flood
	@$(PY) bench/engine.py
	@$(PY) bench/backfill.py
	@$(PY) bench/delivery.py
	@$(PY) bench/pipeline.py
	@$(PY) bench/poison_flood.py

clean: ## remove the venv and run directories
	rm -rf .venv .devstack .pytest_cache
