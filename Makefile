# cryptostack — `make run` and `make test` set everything up on a fresh Debian 12 machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORE_VENV := .venv-core
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
# Example third-party providers, each its own distribution (docs/provider-guide.md).
EXAMPLE_PROVIDERS := $(sort $(dir $(wildcard examples/*/pyproject.toml)))
DEB_PACKAGES := softhsm2 swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config postgresql p11-kit \
	p11-kit-modules
STAMP := $(VENV)/.setup-done
# liboqs is not packaged for Debian 12: developers build it outside the repository and set
# OQS_INSTALL_PATH; a build at the conventional /opt/liboqs is picked up when present.
ifeq ($(origin OQS_INSTALL_PATH), undefined)
ifneq ($(wildcard /opt/liboqs/lib/liboqs.so),)
export OQS_INSTALL_PATH := /opt/liboqs
endif
endif
PYTEST_WORKERS ?= 2

.PHONY: setup run demo test test-core-only bench fuzz lint clean deb-packages

setup: $(STAMP)

# Debian packages the real backends need (SoftHSM2, swtpm, the TSS for tpm2-pytss, the
# PostgreSQL server for the shared key store, p11-kit for a remoted token), and
# systemd's tools for the service tests (systemd-socket-activate, systemd-analyze) when the
# machine lacks them.
deb-packages:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v systemd-socket-activate >/dev/null && command -v systemd-analyze >/dev/null \
	  || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(PLUGINS) $(EXAMPLE_PROVIDERS)) | deb-packages
	@$(MAKE) --no-print-directory deb-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,postgresql]' $(addprefix -e ,$(PLUGINS) $(EXAMPLE_PROVIDERS))
	touch $(STAMP)

# The daemon with the default config, then the demo of every flow of the design.
run: setup
	$(BIN)/python examples/demo.py --config examples/daemon.toml

# Every plugin's and example provider's suite includes the conformance kit against it
# (a ConformanceSuite subclass); tests/ runs it against the mock provider. The example's
# core-only client check uses the $(CORE_VENV) that test-core-only makes.
test: setup test-core-only
	CRYPTOSTACK_FORBID_SKIPS=1 CRYPTOSTACK_CORE_PYTHON=$(abspath $(CORE_VENV))/bin/python \
	  $(BIN)/python -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --import-mode=importlib \
	  tests $(addsuffix tests,$(PLUGINS) $(EXAMPLE_PROVIDERS))

# The core alone in a fresh venv (no plugin installed): its suite must pass on the mock provider.
# The PostgreSQL scenarios run once, in the full suite above.
test-core-only: | deb-packages
	test -x $(CORE_VENV)/bin/python || $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/pip install -q -e '.[test]'
	CRYPTOSTACK_FORBID_SKIPS=1 $(CORE_VENV)/bin/python -m pytest -p no:cacheprovider -q \
	  -n $(PYTEST_WORKERS) tests -m "not needs_plugins and not needs_postgresql"

# Measurements, never assertions: the core against the IPC floor and in-process cryptography,
# then each real backend against its own library (SoftHSM2, swtpm, liboqs when present).
bench: setup
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/pkcs11_latency.py
	$(BIN)/python bench/tpm2_latency.py
	$(BIN)/python bench/oqs_latency.py
	$(BIN)/python bench/keystore_bench.py

# ruff format (one formatter for the whole tree), ruff, the import-linter contracts (the
# layers of docs/architecture.md), mypy on the core and on every plugin.
# A million fuzzed frames against a real daemon with a bystander client (tests/fuzz_daemon.py):
# fails on a crash, a hang, a traceback in the daemon's log, a bystander p99 of 100 ms or more,
# or daemon memory beyond its start plus the configured budget. FUZZ_ARGS=--frames N ...
FUZZ_ARGS ?=
fuzz: setup
	$(BIN)/python tests/fuzz_daemon.py $(FUZZ_ARGS)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check cryptostack_core tests $(PLUGINS) bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy cryptostack_core $(patsubst %/__init__.py,%,$(wildcard plugins/*/cryptostack_*/__init__.py)) \
	  $(patsubst %/__init__.py,%,$(wildcard examples/*/src/cryptostack_*/__init__.py))

clean:
	rm -rf $(VENV) $(CORE_VENV) .pytest_cache .mypy_cache .ruff_cache
