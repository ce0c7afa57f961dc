# weft — see README.md. Every target installs what it needs (scripts/deps.sh) first.
SHELL := /bin/bash
PYTHON ?= $(shell python3 -c 'import sys; print(sys.executable)')
export WEFT_PYTHON := $(PYTHON)
FROZEN := $(CURDIR)/dist/weft/weft
PYTEST := $(PYTHON) -m pytest

.PHONY: deps build demo test test-unit test-kernel test-frozen lint typecheck clean

deps:
	@PYTHON=$(PYTHON) bash scripts/deps.sh

build: deps
	$(PYTHON) -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build packaging/weft.spec

demo: build
	bash scripts/demo.sh

lint: deps
	$(PYTHON) -m ruff check cni ipam tests conformance bench packaging
	$(PYTHON) -m ruff format --check cni ipam || true

typecheck: deps
	$(PYTHON) -m mypy --strict cni ipam

test-unit: deps
	$(PYTEST) -q tests/unit

# The kernel tests run as root in throwaway network namespaces, against the source tree.
test-kernel: deps
	$(PYTEST) -q tests/kernel

# The same kernel tests against the frozen binary: what ships is what is tested.
test-frozen: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/kernel

test: deps lint typecheck test-unit test-kernel test-frozen

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
