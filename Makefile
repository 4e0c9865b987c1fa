# The contract: `make run` starts the whole hub with demo data; `make test` runs the whole suite against its
# own PostgreSQL and Temporal. Nothing is installed by hand: the first target that needs the virtual
# environment creates it from requirements.lock.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GEN_STAMP := build/gen/.stamp
BUF := build/node/node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
# The port `make run` gives the Temporal Web UI (services/devstack: PORT_DEFAULTS).
TEMPORAL_UI_PORT := $(or $(PARCOURS_TEMPORAL_UI_PORT),8233)
# npm installs stay under build/, pinned by the committed package-lock.json, with their cache.
NPM := npm --silent --no-audit --no-fund --cache $(CURDIR)/build/npm-cache
SDK := build/sdk/node
SDK_MODULES := $(SDK)/node_modules/.installed
SDK_STAMP := $(SDK)/.built
SDK_SOURCES := $(wildcard sdk/node/*.js sdk/node/*.ts sdk/node/*.json sdk/node/*.yaml sdk/node/*.md sdk/node/examples/*)
# FHIR R4 validation (tests) needs fhir.resources 6.x, which needs pydantic 1: a venv of its own.
FHIR_R4 := build/fhir-r4
FHIR_R4_STAMP := $(FHIR_R4)/.installed

HELM_TOOLS := build/helm-tools
HELM_TOOLS_STAMP := $(HELM_TOOLS)/.installed
IMAGE ?= parcours:$(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: run test chaos lint protos sdk bench lock helm-test helm-lock image clean help

help:
	@echo "make run      start the hub (PostgreSQL, Temporal + Web UI :$(TEMPORAL_UI_PORT), every service) with demo data"
	@echo "make test     run the whole test suite against its own PostgreSQL and Temporal"
	@echo "make chaos    the chaos scenarios at full size (kills, outages, races; a fast subset is in make test)"
	@echo "make lint     ruff, mypy --strict, buf lint, buf breaking against the previous commit"
	@echo "make protos   generate the Python code of protos/ into build/gen/python"
	@echo "make sdk      the client bundle: build/sdk/node (typed Node package) and its parcours.binpb"
	@echo "make bench    run the benchmarks"
	@echo "make lock     re-lock the Python dependencies (requirements.lock)"
	@echo "make helm-test the Helm chart's tests (lint, render, kubernetes-validate, checkov); part of make test"
	@echo "make image    build the container image (IMAGE=$(IMAGE)); needs a container builder"

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# Our code and the generated code are importable from the venv without a build step.
	$(PY) -c "import pathlib, site, sys; root = pathlib.Path.cwd(); \
	  pathlib.Path(site.getsitepackages()[0], 'parcours.pth').write_text(f'{root}\n{root / \"build/gen/python\"}\n')"
	touch $@

$(GEN_STAMP): $(STAMP) $(PROTOS) protos/generate.py
	$(PY) protos/generate.py
	touch $@

protos: $(GEN_STAMP)

run: $(GEN_STAMP)
	$(PY) -m services.devstack

# The chart's tests (tests/helm) are part of the suite; their tools live in their own environment.
test: $(GEN_STAMP) $(SDK_STAMP) $(BUF) $(FHIR_R4_STAMP) $(HELM_TOOLS_STAMP)
	$(PY) tests/run.py $(ARGS)

# The chaos scenarios (tests/chaos) at full size: races, killed workers, PostgreSQL and Temporal outages, the
# patient-data scan, each printing one line of figures at the end. `make test` runs them at a smaller size.
chaos: $(GEN_STAMP)
	$(PY) tests/run.py tests/chaos --chaos-scale=full $(ARGS)

helm-test: $(GEN_STAMP) $(HELM_TOOLS_STAMP)
	$(PY) tests/run.py tests/helm $(ARGS)

# helm-python-sdk, kubernetes-validate and checkov, from their own lock: their dependencies never move ours.
$(HELM_TOOLS_STAMP): helm/requirements-tools.lock
	rm -rf $(HELM_TOOLS)
	$(PYTHON) -m venv $(HELM_TOOLS)
	$(HELM_TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r helm/requirements-tools.lock
	touch $@

helm-lock:
	$(VENV)/bin/uv pip compile helm/requirements-tools.in --python-version 3.11 --custom-compile-command "make helm-lock" -o helm/requirements-tools.lock

# One image for every component (Dockerfile). A builder is required: say so plainly when there is none.
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  docker build --tag $(IMAGE) . ; \
	elif command -v podman >/dev/null 2>&1; then \
	  podman build --tag $(IMAGE) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
	  buildah bud --tag $(IMAGE) . ; \
	else \
	  echo "make image: no container builder here (no running docker engine, no podman, no buildah)." >&2; \
	  echo "Build on a machine with one: docker build --tag $(IMAGE) ." >&2; \
	  exit 1; \
	fi

$(BUF):
	$(NPM) install --prefix build/node @bufbuild/buf@1.75.0

lint: $(GEN_STAMP) $(BUF)
	$(VENV)/bin/ruff check services workflows tests protos
	MYPYPATH=build/gen/python:protos $(VENV)/bin/mypy
	$(BUF) lint build/image.binpb --config buf.yaml
	$(PY) protos/breaking.py

# The client bundle: the API as one FileDescriptorSet (every import, comments included) and a typed Node
# package generated from it by protoc-gen-es, with Connect for gRPC over HTTP/2 and mutual TLS.
sdk: $(SDK_STAMP)

$(SDK_MODULES): sdk/node/package.json sdk/node/package-lock.json
	mkdir -p $(SDK)
	cp sdk/node/package.json sdk/node/package-lock.json $(SDK)/
	$(NPM) ci --prefix $(SDK)
	touch $@

$(SDK_STAMP): $(GEN_STAMP) $(BUF) $(SDK_MODULES) $(SDK_SOURCES)
	$(PY) protos/generate.py sdk $(SDK)/parcours.binpb
	rm -rf $(SDK)/gen $(SDK)/examples
	$(BUF) generate $(SDK)/parcours.binpb --template sdk/node/buf.gen.yaml --exclude-path google/protobuf
	cp -r sdk/node/index.js sdk/node/index.d.ts sdk/node/tsconfig.json sdk/node/README.md sdk/node/examples $(SDK)/
	cd $(SDK) && node_modules/.bin/tsc --project tsconfig.json
	touch $@

$(FHIR_R4_STAMP): tests/integrator/fhir_r4/requirements.lock
	test -x $(FHIR_R4)/bin/python || $(PYTHON) -m venv $(FHIR_R4)
	$(FHIR_R4)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $<
	touch $@

bench: $(GEN_STAMP)
	$(PY) -m tests.bench

lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf build
