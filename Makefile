# make install / test / fidelity / demo / bench. Each target installs into .venv first when needed.
PYTHON ?= $(shell sh scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test fidelity demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[record,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The long differential run: at least FIDELITY_SHAPES generated shapes (plus the named ones),
# each recorded and replayed; prints shapes x runs, differences and timing error per kind.
FIDELITY_SHAPES ?= 500
fidelity: $(STAMP)
	FIDELITY_SHAPES=$(FIDELITY_SHAPES) $(BIN)/python -m pytest -q -p no:randomly --timeout 3600 tests/fidelity $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m proxy.testing.demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
