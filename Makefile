# peer-ring -- `make demo` and `make test` work on a fresh machine: they create
# the virtualenv, install the package, and install the system packages the
# tests need (redis-tools, etcd-server, zookeeper, chromium) when they are missing.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
APT_PACKAGES = redis-tools redis-server etcd-server zookeeper chromium prometheus
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test quick test-pure lint typecheck unit chaos bench system-deps venv compile \
	uncompile clean docs docs-serve docs-check docs-src protos redis-py-tests fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' wheel  # setup.py's build_ext runs here
	@# playwright drives Debian's chromium (the console's browser test): never a browser download
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install -q -e '.[dev,all,docs]'
	@touch $(STAMP)

# The hot path compiled by mypyc (setup.py lists the modules) into C
# extensions beside their sources, which Python imports in place of the .py.
# Rebuilt whenever any source changed; `make uncompile` goes back to pure
# Python. Tests, the demo and the benchmarks run the compiled build.
SOURCES  := $(shell find src -name '*.py' 2>/dev/null)
COMPILED  = src/.compiled-stamp

compile: $(COMPILED)

$(COMPILED): $(STAMP) setup.py $(SOURCES)
	@echo "compiling the hot path with mypyc (about a minute)"
	@mkdir -p build
	@# a module dropped from the list must not leave its old extension behind
	@find src -name '*.so' -delete
	@PEER_RING_COMPILE=1 $(PY) setup.py -q build_ext --inplace >build/mypyc.log 2>&1 \
	  || { tail -30 build/mypyc.log; exit 1; }
	@# an extension whose generated C did not change is not rebuilt: mark it current
	@find src -name '*.so' -exec touch {} +
	@touch $(COMPILED)

uncompile:
	find src -name '*.so' -delete
	rm -f $(COMPILED)

# Debian packages for real-server tests; installed only when missing.
# (prometheus: its promtool checks and unit-tests deploy/prometheus's rules.)
system-deps:
	@missing=""; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	test -f /usr/share/java/zookeeper.jar || missing="$$missing zookeeper"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	for svc in redis-server etcd zookeeper prometheus; do \
	  ( $(SUDO) systemctl disable --now $$svc >/dev/null 2>&1 || true ); \
	done

demo: $(COMPILED)
	$(PY) -m peer_ring.demo

# ruff, then the layer contracts of docs/architecture.md (import-linter,
# configured in pyproject.toml): a broken contract fails the build and names it.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools examples
	$(VENV)/bin/ruff format --check src tests bench tools examples
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Every test against the compiled build, starting the servers the tests need
# (the fixtures start etcd, ZooKeeper and node processes on loopback), and
# beside it the in-process tests once more against the pure-Python source
# (they start no process and bind no fixed port). Most compiled tests wait
# on node processes, so three streams share the two cores: the integration,
# example and fuzz tests (127.0.x); the fault scenarios (each on a loopback
# /24 of its own, 127.150-249.x) and then the other compiled tests (unit,
# property); the pure-Python pass.
# The second and third streams' output follows the first's. Lint and the
# docs build run while mypyc compiles; mypy after it (both use
# .mypy_cache). pytest's exit 5 (no tests collected) fails the target like
# any other non-zero exit.
COMPILED_PYTEST = PEER_RING_EXPECT_BUILD=compiled $(PY) -m pytest -q -p no:cacheprovider
FIRST_STREAM = tests/integration tests/examples tests/fuzz

test: $(STAMP) system-deps
	@$(MAKE) --no-print-directory -j2 lint docs-check compile
	@$(MAKE) --no-print-directory typecheck
	@mkdir -p build
	@$(MAKE) --no-print-directory test-pure >build/test-pure.log 2>&1 & pure=$$!; \
	{ $(COMPILED_PYTEST) tests/fault; a=$$?; \
	  $(COMPILED_PYTEST) $(FIRST_STREAM:%=--ignore=%) --ignore=tests/fault; b=$$?; \
	  test $$a -eq 0 && test $$b -eq 0; } >build/test-other.log 2>&1 & other=$$!; \
	$(COMPILED_PYTEST) $(FIRST_STREAM); integration=$$?; \
	wait $$other; other_rc=$$?; wait $$pure; pure_rc=$$?; \
	echo "--- fault scenarios, then unit and property tests (build/test-other.log) ---"; \
	cat build/test-other.log; \
	echo "--- the pure-Python pass (build/test-pure.log) ---"; cat build/test-pure.log; \
	echo "compiled integration, example and fuzz tests: exit $$integration;" \
	  "compiled fault, unit and property tests:" \
	  "exit $$other_rc; pure-Python pass: exit $$pure_rc"; \
	test $$integration -eq 0 && test $$other_rc -eq 0 && test $$pure_rc -eq 0

# The pure-Python package (a copy of src/ without the C extensions, first on
# PYTHONPATH, so node processes the tests start run it too).
test-pure: $(STAMP)
	rm -rf build/pure && mkdir -p build && cp -r src build/pure
	find build/pure -name '*.so' -delete
	PYTHONPATH=build/pure PEER_RING_EXPECT_BUILD=pure \
	  $(PY) -m pytest -q -p no:cacheprovider -m "not slow and not integration"

quick: $(COMPILED)
	$(PY) -m pytest -q -m "not slow and not integration" -p no:cacheprovider

# redis-py's own pub/sub and stream tests (from its sdist on PyPI) against a
# 3-node cluster, in a private network namespace; skips: tests/redis_py_skips.txt
redis-py-tests: $(STAMP)
	unshare -n sh -c 'ip link set lo up && exec $(PY) tools/redis_py_tests.py'

# The fuzz targets of tests/fuzz (every decoder that reads network bytes) with
# many more examples than `make test` runs (300 each, derandomized there);
# FUZZ_EXAMPLES=N to change. A failure prints the input that broke it: keep it
# as an @example beside the target once fixed.
FUZZ_EXAMPLES ?= 20000
fuzz: $(COMPILED)
	PEER_RING_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz -p no:cacheprovider

chaos: $(COMPILED) system-deps
	PEER_RING_CHAOS=1 $(PY) -m pytest -q tests/fault -p no:cacheprovider

# Every bench script, then the plots of docs/benchmarks.md (matplotlib: the
# `bench` extra). The plots are drawn even when a script failed; the target
# still fails then.
bench: $(COMPILED) system-deps
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run_all.py; status=$$?; $(PY) bench/plot.py && exit $$status

# The documentation site (Material for MkDocs, mkdocs.yml): `make docs` builds
# it into site/, `make docs-serve` serves it on http://127.0.0.1:8000 with
# live reload. `make docs-check` is the strict build `make test` runs: a
# broken link or anchor, a page missing from the navigation or a docstring
# mkdocstrings cannot render fails it.
# The API reference is read from a copy of src/ without the compiled
# extensions: griffe would inspect a module's .so instead of its source.
DOCS_ENV = NO_MKDOCS_2_WARNING=1 PEER_RING_DOCS_SRC=build/docs-src

docs-src:
	@rm -rf build/docs-src && mkdir -p build && cp -r src build/docs-src
	@find build/docs-src -name '*.so' -delete

docs: $(STAMP) docs-src
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(STAMP) docs-src
	$(DOCS_ENV) $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

docs-check: $(STAMP) docs-src
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict --site-dir build/site-check

# Python modules of the gRPC APIs (gubernator's V1, Envoy's RateLimitService)
# from the .proto files beside them. The generated modules are committed, so
# installing peer-ring never needs protoc; grpcio-tools is pinned in the dev
# extra, and tests/unit/ratelimit/test_protos.py regenerates into a temporary
# directory and fails when the committed modules differ.
PROTO_DIR = src/peer_ring/server/grpc_api/protos
PROTOS   := $(shell find $(PROTO_DIR) -name '*.proto' 2>/dev/null | sort)

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src $(PROTOS)

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
	find src -name '*.so' -delete
	rm -f $(COMPILED)
