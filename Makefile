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

# The main job on the built-in synthetic dataset: generate it (MS COCO layout) and preprocess it
# with the same code path as real COCO.
demo: venv
	$(PY) -m imcap.utils.make_shapes --out $(DEMO)/shapes
	$(PY) -m imcap.utils.prepro_coco --coco_path $(DEMO)/shapes --splits_dir $(DEMO)/shapes/splits \
		--imsize 128 --output_json $(DEMO)/data/shapes.json --output_h5 $(DEMO)/data/shapes.h5

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO) .pytest_cache
