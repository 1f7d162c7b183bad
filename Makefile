# Every target creates and uses .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo serve test chaos fuzz lint bench install clean

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
	$(PY) -m pytest -q -n auto

# The delivery proofs at length: 200 SIGKILLs per crash test, outages and load 10 times
# longer (the normal suite runs them short). Override: make chaos TRM_CHAOS_KILLS=30
TRM_CHAOS_KILLS ?= 200
TRM_CHAOS_SCALE ?= 10
chaos: $(STAMP)
	./tools/ensure-postgres.sh
	TRM_CHAOS_KILLS=$(TRM_CHAOS_KILLS) TRM_CHAOS_SCALE=$(TRM_CHAOS_SCALE) $(PY) -m pytest -q -s \
		tests/e2e/test_delivery_crash.py tests/e2e/test_delivery_outage.py \
		tests/e2e/test_delivery_scaleout.py tests/e2e/test_delivery_faults.py

# The security fuzzing at length (issue 8): schemathesis over the broker's and the node's API
# and atheris over the parsers. Not built yet: the target says so rather than pass.
fuzz:
	@echo "make fuzz: the API and parser fuzzing of issue 8 is not built yet" >&2; exit 1

bench: $(STAMP)
	$(PY) -m bench.ledger

# The dependency audit needs PyPI's JSON API; where it is unreachable it says it did not run.
# TRM_AUDIT_OFFLINE=warn (the default here) then goes on; a CI with network sets it to fail.
TRM_AUDIT_OFFLINE ?= warn
lint: $(STAMP)
	$(VENV)/bin/ruff check trm_broker tests migrations contracts bench tools
	$(VENV)/bin/ruff format --check trm_broker tests migrations contracts bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit -q -c pyproject.toml -r trm_broker --severity-level high
	TRM_AUDIT_OFFLINE=$(TRM_AUDIT_OFFLINE) $(PY) tools/audit_dependencies.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
