# Gen3D serving: `make serve` runs TorchServe with the sam3 (and sam3d) archives; `make test` runs the suite.
# Both install what is missing first (Java 17 JRE via apt, a venv with the pinned packages).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# Real checkpoints: `make serve SAM3_CHECKPOINT=/models/sam3.pt`. Without one, demo archives (random weights).
SAM3_CHECKPOINT ?=

.PHONY: setup java archives serve test lint clean

java:
	@command -v java >/dev/null || { echo "installing a Java 17 JRE (TorchServe's frontend)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless; }

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

setup: java $(STAMP)

archives: setup
	$(BIN)/python scripts/build_archives.py sam3 $(if $(SAM3_CHECKPOINT),--checkpoint $(SAM3_CHECKPOINT))

serve: archives
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python scripts/serve_local.py

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build model-store/*.mar model-store/sam3 model-store/sam3d logs
