# Two commands for a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: venv demo test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The main job on the built-in synthetic dataset, offline: generate it (MS COCO layout),
# preprocess, train, caption the test split, score it, measure the grounding, draw figures;
# prints the path of demo/summary.json last.
demo: venv
	$(PY) -m imcap.demo --out $(DEMO)

# both cores (pytest-xdist): most of the suite's time is single-threaded graph tracing and
# process start-up; -n 0 runs it in one process
test: venv
	$(PY) -m pytest -q -n 2 --dist worksteal

clean:
	rm -rf $(DEMO) .pytest_cache
