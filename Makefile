# The two set-up commands of the README. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

## make demo: generate the demo corpus and run the pipeline on it
demo: $(STAMP)
	$(BIN)/koemorph demo-data data/demo
	$(BIN)/koemorph manifest data/demo -o data_manifests/demo.jsonl
	$(BIN)/koemorph extract data_manifests/demo.jsonl --store cache/demo.zarr

## make test: the whole test suite (what .ci/run runs)
test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf data/demo data_manifests/demo.jsonl data_manifests/demo.problems.jsonl cache/demo.*
