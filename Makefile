# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install what they need (test also installs Debian packages
# through scripts/system-deps.sh: fuse3, etcd-server, iproute2, chromium, prometheus).
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
	sh scripts/system-deps.sh
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

system-deps:
	sh scripts/system-deps.sh

demo: $(VENV)/.demo-installed
	$(VENV)/bin/tidepool demo $(ARGS)

test: $(VENV)/.test-installed
	sh scripts/system-deps.sh
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
