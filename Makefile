# scratchpack: everything a fresh Debian bookworm machine needs, from the repo alone.
#
#   make test    Debian packages + .venv + Docker Engine (best effort) + ruff + mypy + pytest
#   make demo    list (and, once packing exists, pack, build and run) a real program of this machine
#   make bench   bench/resolve.py: ldd vs lddtree vs scratchpack over the host corpus
#   make fuzz    fuzz/fuzz_elf.py: mutated ELF files against the reader and the CLI, FUZZ_SECONDS
#                (`make test` runs a bounded, repeatable ~1 minute of it: tests/test_fuzz_elf.py)
#
# Targets that install Debian packages need root (or sudo).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

export DEBIAN_FRONTEND := noninteractive

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CACHE  := .cache
OUT    := scratchpack-out

# gcc-multilib: -m32 fixtures; musl-tools: musl-gcc fixtures; pax-utils: lddtree (bench);
# debootstrap: --root trees; docker.io: dockerd (docker build tests); strace: debugging loads.
APT_PACKAGES := gcc gcc-multilib musl-tools pax-utils debootstrap docker.io strace

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# A real, dynamically linked program of this machine for `make demo`.
DEMO_PROGRAM  ?= $(firstword $(wildcard /usr/bin/redis-server /usr/sbin/redis-server \
                    /usr/bin/python3 /usr/bin/bash /bin/bash))
DEMO_TAG      ?= scratchpack-demo
DEMO_RUN_ARGS ?= --version
# Extra arguments of the pack step, e.g. DEMO_PACK_ARGS='--extra /etc/redis/redis.conf'.
DEMO_PACK_ARGS ?=

PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_SECONDS ?= 600
# FUZZ_SEED=N repeats a run; by default each run draws new inputs.
FUZZ_SEED    ?=

.PHONY: all deps venv lint test demo bench fuzz docker-engine clean distclean

all: test

## deps: install the Debian packages that are missing (apt-get update at most once).
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q '^install ok installed$$' \
	    || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	echo "deps: installing:$$missing"; \
	mkdir -p $(CACHE); \
	if [ ! -e $(CACHE)/apt-updated ]; then \
	  $(SUDO) apt-get update -q && touch $(CACHE)/apt-updated; \
	fi; \
	if ! $(SUDO) apt-get install -y -q --no-install-recommends $$missing; then \
	  echo "deps: install failed; refreshing package lists once and retrying"; \
	  $(SUDO) apt-get update -q && touch $(CACHE)/apt-updated; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

## venv: .venv with scratchpack installed editable plus the dev tools.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

## lint: ruff check (whole repo) and mypy (configured in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

## docker-engine: start dockerd when `docker info` does not answer; never fails the run.
docker-engine: | deps
	@.ci/docker-engine

## test: everything, on a fresh machine too.
test: deps venv docker-engine lint
	@rc=0; $(BIN)/pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then \
	  echo "make test: pytest collected no tests (exit 5); treated as success"; rc=0; \
	fi; \
	exit "$$rc"

## demo: list a real program; pack, build and run it once the CLI can pack.
demo: deps venv
	@test -n "$(DEMO_PROGRAM)" || { echo "demo: no program found; set DEMO_PROGRAM=" >&2; exit 2; }
	mkdir -p $(OUT)
	$(BIN)/scratchpack --list --json $(DEMO_PROGRAM) > $(OUT)/list.json
	$(BIN)/scratchpack --list $(DEMO_PROGRAM)
	@echo "demo: JSON listing written to $(OUT)/list.json"
	@if $(BIN)/scratchpack --help 2>/dev/null | grep -q -- '--output'; then \
	  $(MAKE) --no-print-directory docker-engine; \
	  set -x; \
	  $(BIN)/scratchpack $(DEMO_PROGRAM) $(DEMO_PACK_ARGS) -o $(OUT); \
	  if docker info >/dev/null 2>&1; then \
	    docker build -t $(DEMO_TAG) $(OUT); \
	    docker image ls $(DEMO_TAG); \
	    docker run --rm $(DEMO_TAG) $(DEMO_RUN_ARGS); \
	  else \
	    set +x; echo "demo: no Docker Engine answers; packed into $(OUT)/ without building"; \
	  fi; \
	else \
	  echo "demo: this scratchpack only lists (packing comes with issue 3)"; \
	fi

## bench: ldd vs lddtree vs scratchpack (BENCH_ARGS='--limit 200 --json').
bench: deps venv
	$(BIN)/python bench/resolve.py $(BENCH_ARGS)

## fuzz: the ELF fuzzing harness for FUZZ_SECONDS; crashes are saved in fuzz/crashes/ (exit 1).
fuzz: venv
	$(BIN)/python fuzz/fuzz_elf.py --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED),)

clean:
	rm -rf $(OUT) testdata/build .pytest_cache .mypy_cache .ruff_cache

# Also drops the cached debootstrap tree (rebuilt by the next `make test`, a few minutes).
distclean: clean
	rm -rf $(VENV) $(CACHE)
