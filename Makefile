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

.PHONY: run test lint protos bench lock clean help

help:
	@echo "make run      start the hub (PostgreSQL, Temporal + Web UI :8233, every service) with demo data"
	@echo "make test     run the whole test suite against its own PostgreSQL and Temporal"
	@echo "make lint     ruff, mypy --strict, buf lint"
	@echo "make protos   generate the Python code of protos/ into build/gen/python"
	@echo "make bench    run the benchmarks"

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

test: $(GEN_STAMP)
	$(PY) tests/run.py $(ARGS)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix build/node @bufbuild/buf@1.75.0

lint: $(GEN_STAMP) $(BUF)
	$(VENV)/bin/ruff check services workflows tests protos
	MYPYPATH=build/gen/python $(VENV)/bin/mypy
	$(BUF) lint build/image.binpb --config buf.yaml

bench: $(GEN_STAMP)
	$(PY) -m tests.bench

lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf build
