# weft — see README.md. Every target installs what it needs (scripts/deps.sh) first.
SHELL := /bin/bash
PYTHON ?= $(shell python3 -c 'import sys; print(sys.executable)')
export WEFT_PYTHON := $(PYTHON)
FROZEN := $(CURDIR)/dist/weft/weft
PYTEST := $(PYTHON) -m pytest

.PHONY: check release test-release test-systemd profile bench bench-quick test-bench deps build install uninstall test-packaging demo test test-unit test-kernel test-frozen test-operator test-operator-frozen test-e2e test-cri cnitool test-robustness test-cluster demo-cluster lint typecheck clean \
	test-serve test-helper test-kernel-helper test-robustness-helper conformance-helper \
	conformance-driver conformance conformance-reference conformance-weft conformance-table mutate

deps:
	@PYTHON=$(PYTHON) bash scripts/deps.sh

# A quick build on this machine, for development: it needs this machine's glibc and runs only
# on its architecture. Not for distribution: `make release` builds what ships.
build: deps
	PYTHON="$(PYTHON)" packaging/build.sh

# The release: dist/release/weft-<version>-linux-{amd64,arm64}.tar.gz and SHA256SUMS, each
# bundle frozen in a Debian bullseye root of its architecture (arm64 under qemu-user) with a
# CPython built there, so it starts on glibc 2.31 and newer; the build fails if any ELF file
# needs more. Roots, CPython and wheels are cached in $(WEFT_RELEASE_CACHE) (packaging/release/).
RELEASE_ARCHS ?= amd64 arm64
export WEFT_RELEASE_CACHE ?= /var/cache/weft-release
release: deps
	bash packaging/release/release.sh $(RELEASE_ARCHS)

# The tarballs where they must run: each in a bullseye root of its architecture (VERSION,
# ADD/CHECK/STATUS/GC/DEL, a request through the helper, install/uninstall, glibc floor), the
# kernel tier against the amd64 bundle in its bullseye root and on this (newer) machine.
OLDROOT := $(PYTHON) tests/release/oldroot.py
test-release: release
	WEFT_RELEASE_ARCHS="$(RELEASE_ARCHS)" $(PYTEST) -q tests/release
	$(OLDROOT) --arch amd64 -- $(PYTEST) -q tests/kernel
	$(OLDROOT) --arch amd64 --on-host -- $(PYTEST) -q tests/kernel

# install.sh from the amd64 release tarball on a node that a real systemd runs (booted as PID 1
# of its own namespaces in the cached bullseye systemd root, tests/systemd/sdroot.py):
# weft.socket enabled, the first pod served by the helper systemd starts (its journal), and
# uninstall leaving nothing of weft enabled; WEFT_NO_HELPER=1 enabling nothing (root).
test-systemd:
	$(MAKE) --no-print-directory release RELEASE_ARCHS=amd64
	$(PYTEST) -q tests/systemd

# make install [DESTDIR=...] [PREFIX=/opt/cni] [CNI_BIN_DIR=$(PREFIX)/bin]
#              [CNI_CONF_DIR=/etc/cni/net.d] [WEFT_LIB_DIR=$(CNI_BIN_DIR)/weft.d]
# installs dist/weft as weft.d/, the entry point CNI_BIN_DIR/weft and 10-weft.conflist;
# on a node systemd runs it enables and starts weft.socket (the helper; WEFT_NO_HELPER=1: not);
# uninstall stops and disables it, then removes exactly what the install manifest lists. (install never builds, so a
# `sudo make install` does not run PyInstaller as root: run `make build` first.)
DESTDIR ?=
PREFIX ?= /opt/cni
CNI_BIN_DIR ?= $(PREFIX)/bin
CNI_CONF_DIR ?= /etc/cni/net.d
WEFT_LIB_DIR ?= $(CNI_BIN_DIR)/weft.d
INSTALL_VARS = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" CNI_BIN_DIR="$(CNI_BIN_DIR)" \
	CNI_CONF_DIR="$(CNI_CONF_DIR)" WEFT_LIB_DIR="$(WEFT_LIB_DIR)"

install:
	$(INSTALL_VARS) packaging/install.sh

uninstall:
	$(INSTALL_VARS) packaging/uninstall.sh

demo: build
	bash scripts/demo.sh

lint: deps
	$(PYTHON) -m ruff check cni cnispec ipam tests conformance bench packaging

typecheck: deps
	$(PYTHON) -m mypy --strict cni cnispec ipam

test-unit: deps
	$(PYTEST) -q tests/unit

# The kernel tests run as root in throwaway network namespaces, against the source tree.
test-kernel: deps
	$(PYTEST) -q tests/kernel

# The same kernel tests against the frozen binary: what ships is what is tested.
test-frozen: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/kernel

# weft ls/status/gc and the day-2 reproductions (root, sandbox node), against the source
# tree and against the frozen binary.
test-operator: deps
	$(PYTEST) -q tests/operator

test-operator-frozen: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/operator

# The frozen binary as a runtime sees it: VERSION, symlinked entry point, install/uninstall.
test-packaging: build cnitool
	WEFT_DIST=$(CURDIR)/dist/weft $(PYTEST) -q tests/packaging

# containerd end to end (root): a private containerd in a sandbox node, ctr run --cni, with
# the frozen weft and with the reference chain.
test-e2e: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/e2e

# Three sandbox nodes on one underlay with flannel's VXLAN and host-gw data paths (the test
# plays flanneld and kube-proxy), pods set up by the frozen weft through libcni (root).
test-cluster: build conformance-driver
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/cluster

demo-cluster: build conformance-driver
	WEFT_PLUGIN=$(FROZEN) $(PYTHON) scripts/demo-cluster.py

# containerd's CRI service end to end (root): pods started the way kubelet starts them, over
# gRPC (runtime.v1), in a private containerd on a sandbox node, with the frozen weft and with
# the reference chain.
test-cri: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/cri

# Concurrency, crashes, reboots, subnet changes, hostile input, frozen binary.
test-robustness: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/robustness

# The CNI conformance suite, through libcni, against any plugin binary + conflist template.
PLUGIN ?= $(FROZEN)
CONFLIST ?= conformance/conflists/weft.conflist
JUNIT ?= build/conformance/result.xml
conformance-driver: deps
	conformance/driver/build.sh

# cnitool for manual testing: the conformance driver's libcni code with cnitool's command line
# (README: "cnitool"). Offline, Debian's golang + libcni.
cnitool: deps
	conformance/driver/build.sh $(CURDIR)/build/cnitool cnitool

conformance: conformance-driver
	mkdir -p $(dir $(JUNIT))
	$(PYTEST) conformance --plugin $(PLUGIN) --conflist $(CONFLIST) \
		-p no:cacheprovider -q -rxXfE --junitxml=$(JUNIT)

conformance-reference: conformance-driver
	$(MAKE) --no-print-directory conformance PLUGIN=/usr/lib/cni/bridge \
		CONFLIST=conformance/conflists/reference.conflist JUNIT=build/conformance/reference.xml

conformance-weft: build conformance-driver
	$(MAKE) --no-print-directory conformance PLUGIN=$(FROZEN) \
		CONFLIST=conformance/conflists/weft.conflist JUNIT=build/conformance/weft.xml

conformance-table: conformance-weft conformance-reference
	$(PYTHON) conformance/table.py weft=build/conformance/weft.xml \
		reference=build/conformance/reference.xml

# Benchmark: the frozen weft vs the reference Go bridge + host-local, side by side (root).
# Results: bench/results/latest.{md,json}, latency.png. Fails only on correctness.
# BASELINE=<git rev> (bench, bench-quick): that revision, frozen once by its own
# packaging/build.sh with this PYTHON into dist/baseline/<full sha>/ (bench/baseline.sh; reused
# while it exists), runs in the same alternation as columns baseline and, when that build has
# `weft serve`, baseline-helper; the report adds weft/baseline and helper/baseline-helper.
WEFT ?= $(FROZEN)
BASELINE ?=
ifneq ($(BASELINE),)
BASELINE_SHA := $(shell git rev-parse --verify --quiet '$(BASELINE)^{commit}')
ifeq ($(BASELINE_SHA),)
$(error BASELINE=$(BASELINE) is not a commit of this repository)
endif
BASELINE_DIR := $(CURDIR)/dist/baseline/$(BASELINE_SHA)
BASELINE_ARGS := --baseline $(BASELINE_DIR)/weft/weft
endif
bench: build
	$(if $(BASELINE),PYTHON="$(PYTHON)" bench/baseline.sh $(BASELINE_SHA) $(BASELINE_DIR))
	$(PYTHON) bench/bench.py --weft $(WEFT) $(BASELINE_ARGS)

# One helper ADD and one helper DEL phase by phase, from outside (strace on the helper, its
# children and the client): bench/results/profile.md (root). Timing, never a test.
profile: build
	$(PYTHON) bench/profile.py --weft $(WEFT)

bench-quick: build
	$(if $(BASELINE),PYTHON="$(PYTHON)" bench/baseline.sh $(BASELINE_SHA) $(BASELINE_DIR))
	$(PYTHON) bench/bench.py --quick --weft $(WEFT) $(BASELINE_ARGS) --out-dir /tmp/weft-bench-quick

# The benchmark harness's own correctness (quick mode, no timing assertions).
test-bench: build
	WEFT_PLUGIN=$(WEFT) $(PYTEST) -q bench/test_smoke.py

# The same tiers with every plugin exec handed to a `weft serve` helper (the frozen binary as
# both client and helper). tests/serve/with_helper.py fails the run if any exec fell back, or
# the helper did not serve every CNI exec of the run (matched by pid): a silent fall-back
# never passes as helper mode. The robustness tier kills plugins from outside, some before
# they reach the helper: those are listed, not failed.
WITH_HELPER := $(PYTHON) tests/serve/with_helper.py --plugin $(FROZEN) --
test-kernel-helper: build
	$(WITH_HELPER) $(PYTEST) -q tests/kernel

test-robustness-helper: build
	$(PYTHON) tests/serve/with_helper.py --plugin $(FROZEN) --allow-unserved -- \
		$(PYTEST) -q tests/robustness

conformance-helper: build conformance-driver
	mkdir -p build/conformance
	$(WITH_HELPER) $(PYTEST) conformance --plugin @PLUGIN@ --conflist conformance/conflists/weft.conflist \
		-p no:cacheprovider -q -rxXfE --junitxml=build/conformance/weft-helper.xml

# The helper itself (root): fall-backs, kills and restarts, zombies, fd/RSS over 1,000
# requests, trust and handshake fuzzing.
test-serve: build
	WEFT_PLUGIN=$(FROZEN) $(PYTEST) -q tests/serve

test-helper: test-serve test-kernel-helper conformance-helper test-robustness-helper

# Mutation testing (mutmut, configured in pyproject.toml) of the pure modules against
# tests/unit: build/mutate/report.md lists every surviving mutant with its justification
# (tests/mutate/justified.toml); fails under 90 % killed or on an unjustified survivor.
# Not part of `make test` or CI: it runs the unit tests once per mutant, thousands of times.
mutate: deps
	$(PYTHON) scripts/mutate.py

# The inner loop while working: lint, mypy, the unit tests and the kernel tier from source
# (root), side by side; `make test` is what CI runs.
check: deps
	$(MAKE) --no-print-directory -j4 --output-sync=target lint typecheck test-unit test-kernel

test: deps lint typecheck test-unit test-kernel test-frozen test-operator test-operator-frozen test-packaging \
	conformance-table test-e2e test-cri test-robustness test-cluster test-bench test-helper test-release test-systemd

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
