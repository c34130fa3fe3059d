# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install what they need into it. `make test` also runs
# scripts/system-deps.sh, which installs fuse3, libfuse3-dev, pkg-config, iproute2, chromium and
# chromium-driver system-wide with apt-get (as root or with sudo, only those missing) and unpacks
# Debian's etcd and prometheus binaries into .venv (etcd-server and prometheus are never
# installed, so no service is enabled or started).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: demo test quick lint bench system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo,plot]'
	touch $@

$(VENV)/.test-installed: pyproject.toml scripts/system-deps.sh | $(PY)
	sh scripts/system-deps.sh $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

system-deps: | $(PY)
	sh scripts/system-deps.sh $(VENV)

demo: $(VENV)/.demo-installed
	$(VENV)/bin/tidepool demo $(ARGS)

test: $(VENV)/.test-installed
	sh scripts/system-deps.sh $(VENV)
	$(PY) -m pytest $(ARGS)

# The edit-test loop: pure and unit tests only (no servers, no namespaces), well under a minute.
quick: $(VENV)/.test-installed
	$(PY) -m pytest -m "not integration and not slow" -q $(ARGS)

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: $(VENV)/.demo-installed
	$(VENV)/bin/tidepool bench $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
