# make run: start the app; make test: the whole test suite (CI's); make test-fast: all but the browser,
# end-to-end and slow tests (under a minute on 2 cores). Each creates .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_ENV := GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1

.PHONY: run test test-fast bench evaluate

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) app.py

test: $(VENV)/.dev
	$(TEST_ENV) $(PY) -m pytest -q

test-fast: $(VENV)/.dev
	$(TEST_ENV) $(PY) -m pytest -q -m "not browser and not e2e and not slow"

bench: $(VENV)/.dev
	$(PY) -m facedemo bench --json bench-out/bench.json

evaluate: $(VENV)/.dev
	$(PY) -m facedemo evaluate tests/data/faces-pd --json bench-out/evaluate.json --plot bench-out/roc.png
