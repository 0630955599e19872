# peer-ring -- `make demo` and `make test` work on a fresh machine: they create
# the virtualenv, install the package, and install the system packages the
# tests need (redis-tools, etcd-server, zookeeper) when they are missing.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
APT_PACKAGES = redis-tools redis-server etcd-server zookeeper
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test quick test-pure lint typecheck unit chaos bench system-deps venv compile \
	uncompile clean fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77' wheel  # setup.py's build_ext runs here
	$(PY) -m pip install -q -e '.[dev,all]'
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
system-deps:
	@missing=""; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	test -f /usr/share/java/zookeeper.jar || missing="$$missing zookeeper"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	for svc in redis-server etcd zookeeper; do \
	  ( $(SUDO) systemctl disable --now $$svc >/dev/null 2>&1 || true ); \
	done

demo: $(COMPILED)
	$(PY) -m peer_ring.demo

# ruff, then the layer contracts of docs/architecture.md (import-linter,
# configured in pyproject.toml): a broken contract fails the build and names it.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Every test against the compiled build, starting the servers the tests need
# (the fixtures start etcd, ZooKeeper and node processes on loopback), then
# the in-process tests once more against the pure-Python source. pytest's
# exit 5 (no tests collected) fails the target like any other non-zero exit.
test: $(STAMP) system-deps lint typecheck $(COMPILED)
	PEER_RING_EXPECT_BUILD=compiled $(PY) -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-pure

# The pure-Python package (a copy of src/ without the C extensions, first on
# PYTHONPATH, so node processes the tests start run it too).
test-pure: $(STAMP)
	rm -rf build/pure && mkdir -p build && cp -r src build/pure
	find build/pure -name '*.so' -delete
	PYTHONPATH=build/pure PEER_RING_EXPECT_BUILD=pure \
	  $(PY) -m pytest -q -p no:cacheprovider -m "not slow and not integration"

quick: $(COMPILED)
	$(PY) -m pytest -q -m "not slow and not integration" -p no:cacheprovider

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

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
	find src -name '*.so' -delete
	rm -f $(COMPILED)
