# Every target creates and uses .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo serve test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trm-broker demo

serve: $(STAMP)
	$(VENV)/bin/trm-broker db upgrade
	$(VENV)/bin/trm-broker serve

test: $(STAMP)
	./tools/ensure-postgres.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench.ledger

lint: $(STAMP)
	$(VENV)/bin/ruff check trm_broker tests migrations contracts bench
	$(VENV)/bin/ruff format --check trm_broker tests migrations contracts bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
