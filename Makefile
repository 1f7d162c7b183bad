# Every target creates and uses .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo serve test test-fast chaos fuzz lint bench docs install bytecode clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Bytecode for the package, its migrations and the bench, so that every process the demo,
# the tests and the bench start loads it instead of compiling the sources again: where
# PYTHONDONTWRITEBYTECODE is set, Python never writes it itself, and each start of a
# trm-broker process compiled the modules it loads anew (about 0.2 s of CPU). Files already
# compiled are skipped; a source changed since is compiled again at import, as always.
bytecode: $(STAMP)
	$(PY) -m compileall -q -j 0 trm_broker migrations bench

# make demo SERVE=1 keeps the processes running, for the web apps in a browser, until Ctrl-C.
demo: $(STAMP) bytecode
	$(VENV)/bin/trm-broker demo $(if $(SERVE),--serve,)

serve: $(STAMP) bytecode
	$(VENV)/bin/trm-broker db upgrade
	$(VENV)/bin/trm-broker serve

test: $(STAMP) bytecode
	./tools/ensure-postgres.sh
	./tools/ensure-chromium.sh
	./tools/ensure-wrk.sh
	$(PY) -m pytest -q -n auto --durations=25

# The inner loop: SQLite only, no real processes (e2e), no fuzzing, the long state machines
# at a quarter of their examples. `make test` runs everything.
test-fast: $(STAMP) bytecode
	TRM_TEST_FAST=1 $(PY) -m pytest -q -n auto -m "not e2e and not postgres and not fuzz"

# The delivery proofs at length: 200 SIGKILLs per crash test, outages and load 10 times
# longer (the normal suite runs them short), the node's outbox included. Override:
# make chaos TRM_CHAOS_KILLS=30
TRM_CHAOS_KILLS ?= 200
TRM_CHAOS_SCALE ?= 10
chaos: $(STAMP) bytecode
	./tools/ensure-postgres.sh
	TRM_CHAOS_KILLS=$(TRM_CHAOS_KILLS) TRM_CHAOS_SCALE=$(TRM_CHAOS_SCALE) $(PY) -m pytest -q -s \
		tests/e2e/test_delivery_crash.py tests/e2e/test_delivery_outage.py \
		tests/e2e/test_delivery_scaleout.py tests/e2e/test_delivery_faults.py \
		tests/e2e/test_delivery_node_outbox.py

# The security fuzzing at length (issue 8): schemathesis over every operation of the
# broker's and the node's API (2000 examples per operation and mode; make test runs 100),
# and atheris over the envelope, JWS, signed-note and problem parsers (500000 runs each;
# make test runs 2000). Override: make fuzz TRM_FUZZ_EXAMPLES=500 TRM_FUZZ_RUNS=100000
TRM_FUZZ_EXAMPLES ?= 2000
TRM_FUZZ_RUNS ?= 500000
fuzz: $(STAMP) bytecode
	TRM_FUZZ_EXAMPLES=$(TRM_FUZZ_EXAMPLES) TRM_FUZZ_RUNS=$(TRM_FUZZ_RUNS) $(PY) -m pytest -q -n auto \
		tests/security/test_api_fuzz.py tests/fuzz

# Issue 21: the broker measured from outside with wrk (tools/ensure-wrk.sh), each figure beside
# a baseline from the same run; prints the table, writes bench/results/, exits 1 if a target
# does not hold. About 20-30 minutes on 2 cores (docs/performance.md).
bench: $(STAMP) bytecode
	./tools/ensure-postgres.sh
	./tools/ensure-wrk.sh
	status=0; \
	$(PY) -m bench.ledger || status=1; \
	$(PY) -m bench.console || status=1; \
	$(PY) -m bench || status=1; \
	exit $$status

# docs/configuration.md and docs/metrics.md, from the settings class and the metric registry
# (tests/test_reference_docs.py fails when they drift).
docs: $(STAMP)
	$(VENV)/bin/trm-broker docs write

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
