# make run: start the app; make test: the whole test suite (CI's); make test-fast: all but the browser,
# end-to-end and slow tests (under a minute on 2 cores). Each creates .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_ENV := GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1

.PHONY: run test test-fast bench evaluate

$(PY):
	python3 -m venv $(VENV)

# The project itself is installed in editable mode (no dependencies: requirements.txt pins them), so
# `import facedemo` works from any folder.
$(VENV)/.runtime: requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
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
	$(PY) -m facedemo bench --json bench-out/bench.json --repeat 9

evaluate: $(VENV)/.dev
	$(PY) -m facedemo evaluate tests/data/faces-pd --models sface_2021dec,dlib_resnet_v1 --baseline seed-cnn \
		--json bench-out/evaluate.json --plot bench-out/roc.png

# The page in chromium: click on "Detect and recognize" to the result, and its breakdown (~2 minutes);
# then the server's memory over 4 browser sessions of 16 analyses each (~2 minutes).
.PHONY: bench-page
bench-page: $(VENV)/.dev
	$(TEST_ENV) $(PY) -m facedemo.tools.bench_page --json bench-out/bench-page.json
	$(TEST_ENV) $(PY) -m facedemo.tools.bench_page --sessions 4 --analyses 16 --linger 40 --json bench-out/bench-page-memory.json
