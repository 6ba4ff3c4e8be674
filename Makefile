# The README's two commands. `make demo` and `make test` work on a fresh machine with Python 3.11 and no GPU.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch pinned to the CPU build: a looser pin can pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[engine,dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	LORARUN_HOME=$${LORARUN_HOME:-$(CURDIR)/.lorarun-home} $(VENV)/bin/lorarun submit jobs/demo.yaml --yes

test: install
	$(PY) -m pytest -q -n 2  # two workers: CI has two cores; the engine runs one thread per tiny model

clean:
	rm -rf $(VENV) output .lorarun-home
