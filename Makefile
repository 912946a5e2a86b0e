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

# A bundled model from its recipe, params/$(1)-model.yaml: the corpus (shared by the recipes), its
# manifest, features and training under build/$(1)-model, then koemorph/bundled/$(1).pt with its card
# (held-out scores: docs/$(1)-model-scores.json)
define bundled_model
	$(BIN)/koemorph demo-data --params params/$(1)-model.yaml
	$(BIN)/koemorph manifest --params params/$(1)-model.yaml
	$(BIN)/koemorph extract --params params/$(1)-model.yaml
	$(BIN)/koemorph train --params params/$(1)-model.yaml --tracking-uri sqlite:///build/$(1)-model/mlflow.db
	$(BIN)/koemorph package-model build/$(1)-model/run/best.pt --corpus build/default-model/corpus \
		--scores docs/$(1)-model-scores.json --name $(1) -o koemorph/bundled/$(1).pt
endef

## make default-model: the bundled model from its recipe (params/default-model.yaml): a 30-minute
## corpus from three engines (needs the Debian packages flite, festival and festvox voices), 150
## epochs of training, then koemorph/bundled/default.pt with its card (held-out scores: docs/default-model-scores.json)
default-model: $(STAMP)
	$(call bundled_model,default)

## make default-live-model: koemorph/bundled/default-live.pt, the model `koemorph stream` uses, from
## params/default-live-model.yaml: the same recipe and corpus on live-decoded phones
default-live-model: $(STAMP)
	$(call bundled_model,default-live)

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
