# Two commands matter: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install the project when it is missing. `make test-slow` runs the tests
# marked `slow` (full-length training and search quality checks), which `make test` leaves out.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.servetune-installed
export BENTOML_DO_NOT_TRACK := True
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	# pip byte-compiles on one core (~60 of the ~100 s on a 2-core VM); compileall uses them all.
	# Like pip's step it skips files this Python cannot compile (torch ships a 3.12-only test file).
	$(PY) -m compileall -q -j0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# The demo's 6-minute budget counts from here, so creating .venv on a fresh clone is inside it.
DEMO_STARTED := $(shell date +%s)

demo: $(STAMP)
	$(VENV)/bin/servetune demo --started-at $(DEMO_STARTED)

test: $(STAMP)
	$(VENV)/bin/pytest

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
