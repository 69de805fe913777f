# make run: start the app; make test: run the test suite. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_ENV := GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1

.PHONY: run test bench evaluate

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

bench: $(VENV)/.dev
	$(PY) -m facedemo bench --json bench-out/bench.json

evaluate: $(VENV)/.dev
	$(PY) -m facedemo evaluate tests/data/faces-pd --json bench-out/evaluate.json --plot bench-out/roc.png
