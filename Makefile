# scratchpack: everything a fresh Debian bookworm machine needs, from the repo alone.
#
#   make test    Debian packages + .venv + Docker Engine and arm64 emulation (best effort)
#                + ruff + mypy + pytest
#   make demo    pack this machine's python3 with what a real job needs; build and run it FROM scratch
#   make bench   bench/resolve.py: ldd vs lddtree vs scratchpack over the host corpus
#   make bench-pack  bench/pack.py: packing (-o, --oci, --docker-archive; first and unchanged
#                repack) against tar | gzip -6 of the same files, redis-server and node
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
# debootstrap: --root trees; docker.io: dockerd (docker build tests); strace: --trace (demo, tests);
# umoci, skopeo: read back what --oci and --docker-archive write, as other tools would (tests);
# docker-registry: a registry of the tests' own on 127.0.0.1 (push, pull); openssl: its TLS
# certificate and the signatures of the tests' token server (bcrypt for htpasswd: libcrypt).
# qemu-user-static: runs arm64 programs (the arm64 tree's second stage, its own ldd and ldconfig,
# registered in binfmt_misc by .ci/binfmt); patchelf: arm64 test cases made from the tree's own
# files (new RPATH, RUNPATH, SONAME), as no arm64 compiler is installed.
APT_PACKAGES := gcc gcc-multilib musl-tools pax-utils debootstrap docker.io strace umoci skopeo \
                docker-registry qemu-user-static patchelf openssl

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `make demo` packs this machine's Python and runs real work FROM scratch: SQL, compression,
# hashing, JSON. The same code is traced while packing (--trace), so every module it imports goes
# in; without the trace the image could do little beyond --version (scratchpack says so).
DEMO_PROGRAM   ?= /usr/bin/python3
DEMO_TAG       ?= scratchpack-demo
DEMO_PACK_ARGS ?= --with base
DEMO_CODE      ?= import hashlib, json, sqlite3, zlib; \
  db = sqlite3.connect(":memory:"); db.execute("create table t (n integer)"); \
  db.executemany("insert into t values (?)", [(i,) for i in range(100000)]); \
  rows, total = db.execute("select count(*), sum(n) from t").fetchone(); \
  packed = zlib.compress(json.dumps(list(range(1000))).encode()); \
  print(json.dumps({"rows": rows, "sum": total, "zlib_bytes": len(packed), \
  "sha256": hashlib.sha256(packed).hexdigest()[:16]}))
export DEMO_CODE

PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_SECONDS ?= 600
# FUZZ_SEED=N repeats a run; by default each run draws new inputs.
FUZZ_SEED    ?=

.PHONY: all deps venv lint test demo bench bench-pack fuzz docker-engine binfmt clean distclean

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

## binfmt: register qemu's aarch64 emulator in binfmt_misc (idempotent); never fails the run.
binfmt: | deps
	@.ci/binfmt

## test: everything, on a fresh machine too.
test: deps venv docker-engine binfmt lint
	@rc=0; $(BIN)/pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then \
	  echo "make test: pytest collected no tests (exit 5); treated as success"; rc=0; \
	fi; \
	exit "$$rc"

## demo: pack a real program with its run-time files; build and run it when an engine answers.
demo: deps venv
	@test -x "$(DEMO_PROGRAM)" || { echo "demo: $(DEMO_PROGRAM) not found; set DEMO_PROGRAM=" >&2; exit 2; }
	mkdir -p $(OUT)
	$(BIN)/scratchpack --list $(DEMO_PROGRAM)
	@$(MAKE) --no-print-directory docker-engine
	$(BIN)/scratchpack $(DEMO_PROGRAM) $(DEMO_PACK_ARGS) \
	  --trace "-c $$(printf '%q' "$$DEMO_CODE")" -o $(OUT)
	@if docker info >/dev/null 2>&1; then \
	  set -x; \
	  docker build -q -t $(DEMO_TAG) $(OUT); \
	  docker image ls $(DEMO_TAG); \
	  docker run --rm $(DEMO_TAG) -c "$$DEMO_CODE"; \
	else \
	  echo "demo: no Docker Engine answers; packed into $(OUT)/ without building"; \
	fi

## bench: ldd vs lddtree vs scratchpack (BENCH_ARGS='--limit 200 --json').
bench: deps venv
	$(BIN)/python bench/resolve.py $(BENCH_ARGS)

## bench-pack: packing against tar | gzip -6, from the tests' cached bookworm tree (built by
## `make test`; BENCH_PACK_ARGS='--repeat 5 --json').
BENCH_PACK_ARGS ?=
bench-pack: venv
	$(BIN)/python bench/pack.py $(BENCH_PACK_ARGS)

## fuzz: the ELF fuzzing harness for FUZZ_SECONDS; crashes are saved in fuzz/crashes/ (exit 1).
fuzz: venv
	$(BIN)/python fuzz/fuzz_elf.py --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED),)

clean:
	rm -rf $(OUT) testdata/build .pytest_cache .mypy_cache .ruff_cache

# Also drops the cached debootstrap trees (rebuilt by the next `make test`, a few minutes).
distclean: clean
	rm -rf $(VENV) $(CACHE)
