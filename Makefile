# Two set-up commands: `make demo` and `make test`. Each works on a fresh machine.
# torch is installed first, pinned to the CPU build that lies on this kind of
# machine's disk; pyproject.toml declares only a range so users get their own build.
# Override with `make TORCH_SPEC='torch' demo` on a GPU box.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JEPA := $(VENV)/bin/jepa
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip --disable-pip-version-check -q

# Offline machines: use the shared data mirror when it sits next to the checkout.
ifneq ($(wildcard ../shared/data),)
export JEPA_DATA_MIRROR ?= $(abspath ../shared/data)
endif

.PHONY: demo test test-slow install dev bench preflight gpu-wheels clean help

help:
	@echo "make demo       install, prepare tiny_shakespeare, train the tiny profile with the dashboard"
	@echo "make test       install with the dev extra and run the fast test suite"
	@echo "make test-slow  run the slow tests too"
	@echo "make bench      time baseline vs JEPA steps on the tiny shape"
	@echo "make gpu-wheels download into .whl/ what a bare GPU image needs for scripts/gpu-check"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(JEPA) data prepare tiny_shakespeare --profile tiny
	$(JEPA) train --profile tiny

test: dev
	$(PY) -m pytest -q

test-slow: dev
	$(PY) -m pytest -q -m slow

bench: install
	$(JEPA) bench --profile tiny

preflight: install
	$(JEPA) preflight

# Wheels (CPython 3.12, manylinux x86-64) of what the GPU image lacks, the project's
# own wheel and the tiny_shakespeare text, for an offline GPU box: carry .whl/ there
# and run scripts/gpu-check (docs/gpu.md). Needs PyPI; --check re-verifies.
gpu-wheels: dev
	$(PY) scripts/gpu_wheels.py --dest .whl

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
