# UDP Lab — set-up, run and test.
#
#   make setup        .venv (editable install) + node_modules + static/vendor/ + the C receive
#                     loop (webapp/engine/libfastpath.so.1, built with cc)
#   make run          start the dashboard (make run HOST=0.0.0.0 PORT=8080)
#   make test-setup   setup + test extras + Debian's chromium, tshark, nats-server (apt-get, as root)
#   make test         run pytest (make test PYTEST_ARGS='-k health -x')
#   make bench        test-setup + the benchmark suite (bench/run.py, ~5 min); prints a table
#                     (make bench BENCH_ARGS='--only echo,memory'); not part of `make test`
#   make clean        remove everything set-up made
#
# Stamp files (in .venv/ and node_modules/) make a second run fast; they are redone
# when pyproject.toml, hatch_build.py, package.json or package-lock.json change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
BENCH_ARGS ?=

INSTALL_STAMP := $(VENV)/.udplab-install.stamp
TEST_STAMP := $(VENV)/.udplab-test-deps.stamp
NPM_STAMP := node_modules/.udplab-npm.stamp
HTMX_DIST := node_modules/htmx.org/dist
VENDOR_FILES := $(addprefix static/vendor/,htmx.min.js hx-ws.min.js swagger-ui-bundle.js swagger-ui.css uPlot.iife.min.js uPlot.min.css)

# The servers' and listeners' C receive loop (webapp/engine/fastpath.py loads it with ctypes).
FASTPATH := webapp/engine/libfastpath.so.1
CC ?= cc
FASTPATH_FLAGS := -O2 -Wall -Wextra -Werror -shared -fPIC -pthread

CHROMIUM := /usr/bin/chromium
APT_PACKAGES := chromium fonts-dejavu-core fonts-liberation tshark nats-server
NATS_SERVER := /usr/sbin/nats-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# HOST/PORT are honoured only when given on the make command line: some shells export
# HOST=<hostname>, which must never turn a plain `make run` into a LAN bind.
RUN_ARGS :=
ifeq ($(origin HOST),command line)
RUN_ARGS += --host $(HOST)
endif
ifeq ($(origin PORT),command line)
RUN_ARGS += --port $(PORT)
endif

.PHONY: setup run test-setup test bench bench-tools chromium clean

setup: $(INSTALL_STAMP) $(VENDOR_FILES) $(FASTPATH)
	@:

run: setup
	exec $(VENV)/bin/udplab $(RUN_ARGS)

test-setup: setup $(TEST_STAMP) chromium
	@:

test: test-setup
	@rc=0; $(VPY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit code 5): failing" >&2; \
	elif [ $$rc -ne 0 ]; then echo "make test: pytest failed (exit code $$rc)" >&2; fi; \
	exit $$rc

# Benchmarks (issue 8): C tools are built from bench/c/ into bench/build/ (git-ignored).
# Exits 0 whether or not the targets hold (BENCH_ARGS=--strict: 1 if a benchmark failed to run).
bench: test-setup bench-tools
	@$(VPY) bench/run.py $(BENCH_ARGS)

# Debian's iperf3, the reference of the stream benchmark (issue 17); only `make bench` needs it.
bench-tools:
	@if ! command -v iperf3 >/dev/null; then \
	  echo "bench: apt-get install iperf3"; \
	  log=$$(mktemp); \
	  if ! { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	         $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	           -o Dpkg::Use-Pty=0 iperf3; } >"$$log" 2>&1; then \
	    cat "$$log" >&2; rm -f "$$log"; echo "error: apt-get failed to install iperf3" >&2; exit 1; fi; \
	  rm -f "$$log"; \
	fi

# --- Python -------------------------------------------------------------------

$(VPY):
	@if ! command -v $(PYTHON) >/dev/null 2>&1; then \
	  echo "error: '$(PYTHON)' not found; UDP Lab needs Python >= 3.11 (make setup PYTHON=python3.12)" >&2; exit 1; fi
	@if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "error: UDP Lab needs Python >= 3.11, but '$(PYTHON)' is $$($(PYTHON) -V 2>&1);" \
	       "pass another one: make setup PYTHON=python3.12" >&2; exit 1; fi
	@echo "setup: creating $(VENV) with $$($(PYTHON) -V 2>&1)"
	@$(PYTHON) -m venv $(VENV)

$(INSTALL_STAMP): pyproject.toml hatch_build.py | $(VPY)
	@echo "setup: pip install -e ."
	@$(PIP) install -q -e .
	@touch $@

$(TEST_STAMP): pyproject.toml hatch_build.py $(INSTALL_STAMP)
	@echo "test-setup: pip install -e '.[test]'"
	@$(PIP) install -q -e '.[test]'
	@touch $@

# --- JavaScript (npm registry -> node_modules -> static/vendor) ------------------

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found (install Node.js >= 18)" >&2; exit 1; }
	@echo "setup: npm ci"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Each vendored file and where npm put it; `make setup` copies them (maps too, if any).
VENDOR_htmx.min.js := $(HTMX_DIST)/htmx.min.js
VENDOR_hx-ws.min.js := $(HTMX_DIST)/ext/hx-ws.min.js
VENDOR_swagger-ui-bundle.js := node_modules/swagger-ui-dist/swagger-ui-bundle.js
VENDOR_swagger-ui.css := node_modules/swagger-ui-dist/swagger-ui.css
VENDOR_uPlot.iife.min.js := node_modules/uplot/dist/uPlot.iife.min.js
VENDOR_uPlot.min.css := node_modules/uplot/dist/uPlot.min.css

static/vendor/%: $(NPM_STAMP)
	@mkdir -p $(@D)
	@cp $(VENDOR_$*) $@
	@if [ -f $(VENDOR_$*).map ]; then cp $(VENDOR_$*).map $@.map; fi

# --- Debian's Chromium for the browser tests (never `playwright install`), tshark, and
# nats-server for the fleet tests (tests/fleet/ start their own on a free port) ----------

chromium:
	@fonts_ok=1; dpkg-query -W -f='$${Status}' fonts-dejavu-core 2>/dev/null | grep -q 'ok installed' || fonts_ok=0; \
	if [ ! -x $(CHROMIUM) ] || [ $$fonts_ok = 0 ] || ! command -v tshark >/dev/null \
	     || [ ! -x $(NATS_SERVER) ]; then \
	  echo "test-setup: apt-get install $(APT_PACKAGES)"; \
	  log=$$(mktemp); \
	  if ! { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	         $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	           -o Dpkg::Use-Pty=0 $(APT_PACKAGES); } >"$$log" 2>&1; then \
	    cat "$$log" >&2; rm -f "$$log"; echo "error: apt-get failed to install $(APT_PACKAGES)" >&2; exit 1; fi; \
	  rm -f "$$log"; \
	  [ -x $(CHROMIUM) ] || { echo "error: $(CHROMIUM) still missing after apt-get" >&2; exit 1; }; \
	  [ -x $(NATS_SERVER) ] || { echo "error: $(NATS_SERVER) still missing after apt-get" >&2; exit 1; }; \
	fi

# --- clean --------------------------------------------------------------------

$(FASTPATH): webapp/engine/fastpath.c
	$(CC) $(FASTPATH_FLAGS) -o $@ $<

clean:
	rm -rf $(VENV) node_modules static/vendor build dist .pytest_cache test-results $(FASTPATH)
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
