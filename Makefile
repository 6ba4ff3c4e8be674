# The README's two commands. `make demo` and `make test` work on a fresh machine with Python 3.11 and no GPU.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# `python -m pip`, not .venv/bin/pip: a venv copied from another checkout (cp -a) keeps pip scripts whose #! names
# the other venv's python, which would install this tree into that venv; bin/python finds its own venv.
PIP    := $(PY) -m pip
# torch pinned to the CPU build: a looser pin can pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test faults test-container lint install clean

$(VENV)/.installed: pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 'setuptools>=77'  # 77: pyproject's SPDX license string
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[engine,dev]'
	@touch $@

install: $(VENV)/.installed

# The demo's job is recorded in the normal lorarun home (~/.lorarun, or $$LORARUN_HOME), so `lorarun status`,
# `logs` and the report find it afterwards. --yes: the demo runs on this machine at no cost, and says so first.
# --overwrite: running the demo again replaces its toy LoRA (a job's earlier outputs are otherwise kept, #24).
demo: install
	$(VENV)/bin/lorarun submit jobs/demo.yaml --yes --overwrite
	@echo "demo state: $${LORARUN_HOME:-$$HOME/.lorarun}/jobs — see it with: $(VENV)/bin/lorarun status"

test: install
	$(PY) -m pytest -q -n 2 --dist worksteal --ignore=tests/faults  # two workers: CI has two cores; the engine runs one thread per tiny model; worksteal + longest first (tests/conftest.py): no idle core at the end

# The checks: ruff (lint, then the formatter's check), the layer contracts (import-linter, [tool.importlinter] in
# pyproject.toml), no import cycle anywhere (tools/check_cycles.py: import-linter has no cycle contract), mypy over
# the controller, adapters, SSH link and contract ([tool.mypy] files).
# Python tools run through $(PY) (see PIP above); ruff is a binary.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -c 'import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())'
	$(PY) tools/check_cycles.py
	$(PY) -m mypy

# The fault suite (tests/faults): every fault scenario once, then a table fault → expected → observed and the totals
# (faults injected ≥ 30, instances left alive 0, outputs lost 0; the run fails unless they read so). Not part of
# `make test`, so nothing runs twice; .ci/run runs both.
faults: install
	$(PY) -m pytest -q -n 2 -p tests.support.fault_table tests/faults

# Containers of the instance image as the instances (Docker; minutes): .ci/run starts the daemon and runs this after
# `make test`. One worker: each test starts containers and the first one builds the image.
test-container: install
	$(PY) -m pytest -q -n 0 -m container tests/container

clean:
	rm -rf $(VENV) output .lorarun-home  # .lorarun-home: where older demos kept their state
