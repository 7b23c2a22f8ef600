# cleanroom: the entry point for developers and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
KUBECONFIG_FILE := $(CURDIR)/.cluster/kubeconfig
PYTEST_ARGS ?=

.PHONY: help install lint fmt cluster-up cluster-down crds crds-gen dev down test test-unit test-integration chart-check images-lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml hack/install-system-deps.sh
	hack/install-system-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,hub,notebook]'
	hack/install-node-tools.sh
	touch $@

install: $(VENV)/.installed ## Debian packages the stack needs, then .venv with cleanroom and its dev tools

lint: install ## ruff, mypy and the import contract (the layers of ARCHITECTURE.md, in pyproject.toml)
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: install ## format the code
	$(VENV)/bin/ruff check --fix operator tests bench
	$(VENV)/bin/ruff format operator tests bench

cluster-up: install ## build (first time) and start the local control plane, S3 server, PACS and audit service
	hack/cluster-up.sh

cluster-down: ## stop the local stack; leaves no process behind
	hack/cluster-down.sh

crds: ## install or update the CRDs in the local cluster
	hack/install-crds.sh

crds-gen: install ## write crds/ and the chart's copy from the API types (operator/cleanroom/api; a unit test holds them equal)
	$(PY) -m cleanroom.api.crdgen crds charts/cleanroom/crds

dev: install cluster-up crds ## bring up the stack, start the operator, apply examples/ and show them
	hack/dev.sh

down: cluster-down ## same as cluster-down

test-unit: install ## unit tests (no cluster)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install cluster-up crds ## integration tests against the local stack
	KUBECONFIG=$(KUBECONFIG_FILE) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

test: install cluster-up crds ## every test: unit, then integration against the local stack
	KUBECONFIG=$(KUBECONFIG_FILE) $(PY) -m pytest tests $(PYTEST_ARGS)

chart-check: install cluster-up crds ## helm lint, kubeconform every example, install the chart into the local cluster, check RBAC
	hack/chart-check.sh

images-lint: ## lint the Containerfiles (hadolint from PyPI)
	hack/images-lint.sh
