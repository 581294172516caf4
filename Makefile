# Gen3D serving: `make serve` runs TorchServe with the sam3 (and sam3d) archives and the demo page
# (http://127.0.0.1:8090/); `make test` runs the suite. Both install what is missing first (Java 17 JRE, Node.js
# and npm via apt, a venv with the pinned packages, the page's npm packages; Debian's Chromium for the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := requirements.txt requirements-dev.txt requirements-sam3d-cpu.txt requirements-onnx.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQUIREMENTS) pyproject.toml | sha1sum | cut -c1-12)
# Real checkpoints: `make serve SAM3_CHECKPOINT=/models/sam3.pt SAM3D_PIPELINE_DIR=/models/sam3d/hf`.
# Without them, demo archives (random weights; sam3d's demo preset tiny-cpu-demo runs on the CPU).
SAM3_CHECKPOINT ?=
SAM3D_PIPELINE_DIR ?=
# Real SAM 3 weights need a GPU unless ALLOW_CPU=1 (then ~100 s per image on a CPU).
ALLOW_CPU ?=
# S3 buckets requests may name (GEN3D_ALLOWED_BUCKETS: comma-separated names or globs); empty: none, every request
# naming a bucket answers 403. `make serve BUCKETS=gen3d-data-bucket`
BUCKETS ?= $(GEN3D_ALLOWED_BUCKETS)

# `make sagemaker-local`: the SageMaker container's `serve` (gen3d-serve) without Docker, on the archives of
# MODEL_DIR (what SageMaker copies to /opt/ml/model), inference on PORT; MODEL picks one archive (GEN3D_MODEL).
# Management and metrics go to PORT+1 and PORT+2; stop `make serve` first (TorchServe's gRPC ports and worker
# sockets are the same for both).
MODEL_DIR ?= model-store
PORT ?= 9080
MODEL ?=

# the demo page's npm packages (onnxruntime-web, three), exactly as web/package-lock.json pins them
WEB_STAMP := web/node_modules/.installed-$(shell cat web/package-lock.json | sha1sum | cut -c1-12)

.PHONY: setup java node chromium web archives serve sagemaker-local test unit bench lint clean

java:
	@command -v java >/dev/null || { echo "installing a Java 17 JRE (TorchServe's frontend)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless; }

node:
	@command -v npm >/dev/null || { echo "installing Node.js and npm (the demo page's packages)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; }

# the browser tests drive Debian's Chromium (Playwright never downloads a browser here)
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's Chromium (the browser tests)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

$(WEB_STAMP): web/package.json web/package-lock.json
	# --ignore-scripts: the page serves the packages' files as published; no install script needs to run
	cd web && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

web: node $(WEB_STAMP)

$(STAMP): $(REQUIREMENTS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q $(addprefix -r ,$(REQUIREMENTS))
	# this checkout as the gen3d package (editable: archives carry no code, workers import it from here)
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

setup: java $(STAMP)

archives: setup
	$(BIN)/gen3d-build-archives sam3 $(if $(SAM3_CHECKPOINT),--checkpoint $(SAM3_CHECKPOINT)) $(if $(ALLOW_CPU),--allow-cpu)
	$(BIN)/gen3d-build-archives sam3d $(if $(SAM3D_PIPELINE_DIR),--pipeline-dir $(SAM3D_PIPELINE_DIR))

serve: archives web
	PATH=$(CURDIR)/$(BIN):$$PATH GEN3D_ALLOWED_BUCKETS=$(BUCKETS) $(BIN)/gen3d-serve-local

sagemaker-local: setup
	SM_MODEL_DIR=$(abspath $(MODEL_DIR)) SAGEMAKER_BIND_TO_PORT=$(PORT) GEN3D_MODEL=$(MODEL) GEN3D_ALLOWED_BUCKETS=$(BUCKETS) \
	  GEN3D_MANAGEMENT_PORT=$$(( $(PORT) + 1 )) GEN3D_METRICS_PORT=$$(( $(PORT) + 2 )) $(BIN)/gen3d-serve

test: setup web chromium
	$(BIN)/python -m pytest -q

# unit tests only: no server started, about a minute
unit: setup
	$(BIN)/python -m pytest -q tests/unit

# benchmarks, not tests: prints serving overhead, batching, cold start, cache reads and mask memory (~10 min here)
bench: setup
	$(BIN)/gen3d-bench

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf build model-store/*.mar model-store/sam3 model-store/sam3d logs web/node_modules
