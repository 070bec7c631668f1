# Two entry points on a fresh clone: `make repro` (the pipeline) and `make test` (the tests).
# Both create .venv and install the project into it when it is missing or pyproject or the lock changed:
# every package at the version requirements.lock pins (`make lock` re-resolves it, see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which TensorFlow: cpu (tensorflow-cpu, requirements.lock) or gpu (tensorflow with NVIDIA's CUDA
# wheels, requirements-gpu.lock): `make setup TF=gpu`. Switching removes the other distribution first.
TF ?= cpu
LOCK := $(if $(filter gpu,$(TF)),requirements-gpu.lock,requirements.lock)
OTHER_TF := $(if $(filter gpu,$(TF)),tensorflow-cpu,tensorflow)

.PHONY: setup repro test test-fast lint lock screenshots

setup: $(VENV)/.installed-$(TF)

$(VENV)/.installed-$(TF): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes $(OTHER_TF) 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev,$(TF)]'
	rm -f $(VENV)/.installed-*
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Two pytest-xdist workers, a test file at a time: the pipeline tests (one shared repro'd workspace) on
# one, the recipes then the rest on the other (tests/conftest.py orders the files); a repro keeps about
# one core busy, so two fit two cores.
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

# Retake docs/screenshots/ (docs/screenshots.py): run in a fresh clone after `make repro`, then copy
# docs/screenshots/ into the commit that changed what they show.
screenshots: setup
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[docs,$(TF)]'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python docs/screenshots.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-resolve both locks: the newest versions pyproject.toml's ranges allow, for Linux x86_64 and Python
# 3.11 (the platform TensorFlow ships for); requirements-gpu.lock starts from requirements.lock's pins,
# so the two differ only in TensorFlow and the CUDA wheels. Run it, then `make setup test`, then commit both.
lock: setup
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra docs --extra cpu --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --upgrade --custom-compile-command "make lock" -o requirements.lock
	cp requirements.lock requirements-gpu.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra docs --extra gpu --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements-gpu.lock
