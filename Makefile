# The two set-up commands of the README. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean-demo default-model default-live-model

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

## make demo: generate the demo corpus and run the whole pipeline on it (dvc.yaml, params.yaml)
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro
	$(BIN)/koemorph summary

## make default-model: the bundled model from its recipe (params/default-model.yaml): a 30-minute
## corpus from three engines (needs the Debian packages flite, festival and festvox voices), 20 minutes
## of training, then koemorph/bundled/default.pt with its card (held-out scores: docs/default-model-scores.json)
DM_PARAMS := --params params/default-model.yaml
default-model: $(STAMP)
	$(BIN)/koemorph demo-data $(DM_PARAMS)
	$(BIN)/koemorph manifest $(DM_PARAMS)
	$(BIN)/koemorph extract $(DM_PARAMS)
	$(BIN)/koemorph train $(DM_PARAMS) --tracking-uri sqlite:///build/default-model/mlflow.db
	$(BIN)/koemorph package-model build/default-model/run/best.pt --corpus build/default-model/corpus \
		--scores docs/default-model-scores.json -o koemorph/bundled/default.pt

## make default-live-model: koemorph/bundled/default-live.pt, the model `koemorph stream` uses, from
## params/default-live-model.yaml: the same recipe and corpus on live-decoded phones
DLM_PARAMS := --params params/default-live-model.yaml
default-live-model: $(STAMP)
	$(BIN)/koemorph demo-data $(DLM_PARAMS)
	$(BIN)/koemorph manifest $(DLM_PARAMS)
	$(BIN)/koemorph extract $(DLM_PARAMS)
	$(BIN)/koemorph train $(DLM_PARAMS) --tracking-uri sqlite:///build/default-live-model/mlflow.db
	$(BIN)/koemorph package-model build/default-live-model/run/best.pt --corpus build/default-model/corpus \
		--scores docs/default-live-model-scores.json --name default-live -o koemorph/bundled/default-live.pt

## make lint: ruff (pinned in the test extra) checks and format-checks the whole tree
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## make test: lint, then the whole test suite (what .ci/run runs)
test: lint
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf data/demo data_manifests/demo.jsonl data_manifests/demo.problems.jsonl cache/demo.* runs/demo \
		renders/demo reports/demo dvc.lock
