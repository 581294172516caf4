# Gen3D serving: `make serve` runs TorchServe with the sam3 (and sam3d) archives and the demo page
# (http://127.0.0.1:8090/); `make test` runs the suite. Both install what is missing first (Java 17 JRE, Node.js
# and npm via apt, a venv with the pinned packages, the page's npm packages; Debian's Chromium for the tests).
# `make check-images` proves the production images' Python environments (locks/): see docs/development.md "Versions and why".
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := requirements.txt requirements-dev.txt requirements-sam3d-cpu.txt requirements-page.txt
STAMP := $(VENV)/.installed-$(shell cat $(REQUIREMENTS) pyproject.toml | sha1sum | cut -c1-12)
# Real checkpoints: `make serve SAM3_CHECKPOINT=/models/sam3.pt SAM3D_PIPELINE_DIR=/models/sam3d/hf`;
# SAM 3D Body: SAM3D_BODY_CHECKPOINT=/models/sam-3d-body-vith/model.ckpt (model_config.yaml and assets/mhr_model.pt
# beside it; SAM3D_BODY_PRESET=sam3d-body-dinov3 for the DINOv3 download, with DINOv3's code staged as dinov3/).
# Without them, demo archives (random weights; sam3d's demo preset tiny-cpu-demo runs on the CPU).
SAM3_CHECKPOINT ?=
SAM3D_PIPELINE_DIR ?=
# Real SAM 3 weights need a GPU unless ALLOW_CPU=1 (then ~100 s per image on a CPU).
ALLOW_CPU ?=
# S3 buckets requests may name (GEN3D_ALLOWED_BUCKETS: comma-separated names or globs); empty: none, every request
# naming a bucket answers 403. `make serve BUCKETS=gen3d-data-bucket`
BUCKETS ?= $(GEN3D_ALLOWED_BUCKETS)

# uv installs every environment (pinned in requirements-dev.txt; bootstrapped into .venv with pip).
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements-dev.txt)
UV := $(BIN)/uv
# uv reads no pip configuration, and this machine's pip finds torch 2.14.1 through its configured extra indexes,
# find-links and constraints: they are passed on (empty where pip has none); `unsafe-best-match` picks the best
# version across all indexes, as pip does.
PIP_CONFIG = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
UV_DEV_INDEXES = --index-strategy unsafe-best-match $(addprefix --extra-index-url ,$(call PIP_CONFIG,extra-index-url)) \
  $(addprefix --find-links ,$(sort $(call PIP_CONFIG,find-links) $(PIP_FIND_LINKS))) $(addprefix -c ,$(call PIP_CONFIG,constraint))

# Image locks: PyPI only, for the images' platform (Ubuntu 22.04 = manylinux_2_35, x86_64, CPython 3.11), with
# hashes. LOCK_DATE hides releases uploaded later, but the registry reachable here gains releases late with
# earlier upload dates, so the date alone does not freeze a resolve: `make check-locks` starts from the committed
# locks and fails only when an input changed. Move LOCK_DATE forward, then `make locks UPGRADE=1`, to update.
# An existing lock's pins are kept where its inputs allow (uv's preferences): `make locks UPGRADE=1` takes the
# newest releases up to LOCK_DATE instead.
LOCK_DATE := 2026-11-28T00:00:00Z
UPGRADE ?=
UV_COMPILE = $(UV) pip compile --no-config --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_35 \
  --generate-hashes --emit-index-url --exclude-newer $(LOCK_DATE) --custom-compile-command "make locks" \
  $(if $(UPGRADE),--upgrade)
# sam3d: what cannot come from PyPI stays out of the lock (locks/sam3d-image.excludes.txt, cuda121.txt, builds.txt)
SAM3D_LOCK_ARGS := --overrides locks/sam3d-image.overrides.txt --excludes locks/sam3d-image.excludes.txt \
  $(addprefix --no-emit-package ,torch torchvision torchaudio xformers)
LOCK_OUT ?= locks
LOCK_NAMES ?= image-tools sam3-image sam3-image-test sam3d-image sam3d-image-test
LOCK_ARGS_sam3-image := --overrides locks/sam3-image.overrides.txt
LOCK_ARGS_sam3d-image := $(SAM3D_LOCK_ARGS)
# The test locks are resolved against locks/'s image lock (written just before by `make locks`; the committed one
# in `make check-locks`, which checks that lock on its own): uv writes the constraint's path into the lock's
# comments, so a temporary folder's path there would make every check fail.
LOCK_ARGS_sam3-image-test := -c locks/sam3-image.lock
LOCK_ARGS_sam3d-image-test := -c locks/sam3d-image.lock --overrides locks/sam3d-image.overrides.txt
# The sam3 image's locked environment here (its CUDA wheels run on the CPU), with the test tools.
IMAGE_VENV := .venv-sam3-image
IMAGE_STAMP := $(IMAGE_VENV)/.installed-$(shell cat locks/sam3-image.lock locks/sam3-image-test.lock pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
# The sam3 tests: no sam3d CPU demo stack in that environment, so the fixtures build and serve sam3 only.
SAM3_TESTS := $(wildcard tests/unit/test_sam3_*.py) tests/unit/test_serving_units.py tests/unit/test_gpu_check.py \
  tests/integration/test_get_embedding_serving.py tests/integration/test_segment_serving.py \
  tests/integration/test_sagemaker_serve.py
# The sam3d_body tests (marked sam3d_body) run in the same environment: model sam3d_body is served from the sam3
# image (Dockerfile target sam3d_body), whose sam-3d-body checkout PyPI's sam3d 0.1.2 stands in for here
# (sam3-image-test.in). SAM3D_BODY_ROOT: that copy's folder, what the image's PYTHONPATH=/opt/sam-3d-body is.
SAM3D_BODY_TESTS := $(wildcard tests/unit/test_sam3d_body*.py tests/integration/test_generate_body*.py)
SAM3D_BODY_ROOT = $$($(IMAGE_VENV)/bin/python -c "import importlib.util, pathlib; \
  print(pathlib.Path(importlib.util.find_spec('sam3d').origin).parent / 'third_party' / 'meta')")
# The sam3d image's locked environment here: its pip tools (image-tools.lock), sam3d-image.lock less the CUDA-only
# packages of sam3d-image-test.excludes.txt, and sam3d-image-test.lock (PyPI's torch 2.5.1 for the +cu121 builds,
# sam3d 0.1.2 for the sam-3d-objects checkout, CPU stand-ins for what the image compiles, the test tools).
SAM3D_IMAGE_VENV := .venv-sam3d-image
SAM3D_IMAGE_INPUTS := locks/image-tools.lock locks/sam3d-image.lock locks/sam3d-image-test.lock \
  locks/sam3d-image-test.excludes.txt pyproject.toml
SAM3D_IMAGE_STAMP := $(SAM3D_IMAGE_VENV)/.installed-$(shell cat $(SAM3D_IMAGE_INPUTS) 2>/dev/null | sha1sum | cut -c1-12)
SAM3D_TESTS := tests/unit/test_sam3d_units.py tests/unit/test_sam3d_scene.py tests/unit/test_serving_units.py \
  tests/integration/test_generate_3d_serving.py tests/integration/test_generate_3d_scenes.py \
  tests/integration/test_sam3d_worker_imports.py
# What pip check says only here: the stand-in torch (PyPI's CUDA 12.4 build) asks for CUDA 12.4 libraries, the lock
# holds the CUDA 12.1 ones of the image's torch 2.5.1+cu121.
STAND_IN_TORCH_CHECK := ^torch 2\.5\.1 has requirement nvidia-[a-z0-9-]+==[0-9.]+; .*, but you have nvidia-[a-z0-9-]+ [0-9.]+\.$$

# `make sagemaker-local`: the SageMaker container's `serve` (gen3d-serve) without Docker, on the archives of
# MODEL_DIR (what SageMaker copies to /opt/ml/model), inference on PORT; MODEL picks one archive (GEN3D_MODEL).
# Management and metrics go to PORT+1 and PORT+2, gRPC to PORT+3 and PORT+4; stop `make serve` first
# (TorchServe's worker sockets are the same for both).
MODEL_DIR ?= model-store
PORT ?= 9080
MODEL ?=

# the demo page's npm packages (onnxruntime-web, three, swagger-ui-dist for /api), exactly as web/package-lock.json pins them
WEB_STAMP := web/node_modules/.installed-$(shell cat web/package-lock.json | sha1sum | cut -c1-12)

.PHONY: setup java node chromium web archives serve sagemaker-local test unit bench lint clean locks check-locks check-images \
  gpu-check-wheels

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
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	# --compile-bytecode: every process of make test (TorchServe workers, the scripts it runs) would otherwise compile
	# torch's and sam3's sources again where PYTHONDONTWRITEBYTECODE is set, as on this machine (~6 s each)
	$(UV) pip install -q -p $(BIN)/python --no-config --compile-bytecode $(UV_DEV_INDEXES) $(addprefix -r ,$(REQUIREMENTS))
	# this checkout as the gen3d package (editable: archives carry no code, workers import it from here)
	$(UV) pip install -q -p $(BIN)/python --no-config --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

setup: java $(STAMP)

archives: setup
	$(BIN)/gen3d-build-archives sam3 $(if $(SAM3_CHECKPOINT),--checkpoint $(SAM3_CHECKPOINT)) $(if $(ALLOW_CPU),--allow-cpu)
	$(BIN)/gen3d-build-archives sam3d $(if $(SAM3D_PIPELINE_DIR),--pipeline-dir $(SAM3D_PIPELINE_DIR))
	$(BIN)/gen3d-build-archives sam3d_body $(if $(SAM3D_BODY_CHECKPOINT),--checkpoint $(SAM3D_BODY_CHECKPOINT)) \
	  $(if $(SAM3D_BODY_PRESET),--preset $(SAM3D_BODY_PRESET))

serve: archives web
	PATH=$(CURDIR)/$(BIN):$$PATH GEN3D_ALLOWED_BUCKETS=$(BUCKETS) $(BIN)/gen3d-serve-local

sagemaker-local: setup
	SM_MODEL_DIR=$(abspath $(MODEL_DIR)) SAGEMAKER_BIND_TO_PORT=$(PORT) GEN3D_MODEL=$(MODEL) GEN3D_ALLOWED_BUCKETS=$(BUCKETS) \
	  GEN3D_MANAGEMENT_PORT=$$(( $(PORT) + 1 )) GEN3D_METRICS_PORT=$$(( $(PORT) + 2 )) \
	  GEN3D_GRPC_PORTS=$$(( $(PORT) + 3 )),$$(( $(PORT) + 4 )) $(BIN)/gen3d-serve

test: setup web chromium
	$(BIN)/python -m pytest -q

# unit tests only: no server started, about a minute
unit: setup
	$(BIN)/python -m pytest -q tests/unit

# benchmarks, not tests: prints serving overhead, batching, cold start, cache reads, mask memory, the worst
# segment batch and click-to-mask in Chromium (~15-25 min here; `gen3d-bench --only NAME` runs one part)
bench: setup web chromium
	$(BIN)/gen3d-bench

lint: setup
	$(BIN)/ruff check .

# Writes the image locks from their inputs (locks/*.in, third_party/sam-3d-objects/); commit the result.
# LOCK_NAMES picks some of them (each test lock resolves against locks/'s image lock).
locks: setup
	$(foreach lock,$(LOCK_NAMES),$(UV_COMPILE) locks/$(lock).in $(LOCK_ARGS_$(lock)) -o $(LOCK_OUT)/$(lock).lock &&) true

$(SAM3D_IMAGE_STAMP): $(SAM3D_IMAGE_INPUTS) | setup
	rm -rf $(SAM3D_IMAGE_VENV)
	$(UV) venv -q --no-config -p $(PYTHON) $(SAM3D_IMAGE_VENV)
	$(UV) pip install -q -p $(SAM3D_IMAGE_VENV)/bin/python --no-config --require-hashes --no-deps -r locks/image-tools.lock
	$(UV) pip install -q -p $(SAM3D_IMAGE_VENV)/bin/python --no-config --require-hashes --no-deps \
	  --excludes locks/sam3d-image-test.excludes.txt -r locks/sam3d-image.lock
	$(UV) pip install -q -p $(SAM3D_IMAGE_VENV)/bin/python --no-config --require-hashes --no-deps -r locks/sam3d-image-test.lock
	$(UV) pip install -q -p $(SAM3D_IMAGE_VENV)/bin/python --no-config --no-deps --no-build-isolation -e .
	touch $@

$(IMAGE_STAMP): locks/sam3-image.lock locks/sam3-image-test.lock pyproject.toml | setup
	rm -rf $(IMAGE_VENV)
	$(UV) venv -q --no-config -p $(PYTHON) $(IMAGE_VENV)
	$(UV) pip install -q -p $(IMAGE_VENV)/bin/python --no-config --require-hashes --no-deps -r locks/sam3-image.lock
	$(UV) pip install -q -p $(IMAGE_VENV)/bin/python --no-config --require-hashes --no-deps -r locks/sam3-image-test.lock
	$(UV) pip install -q -p $(IMAGE_VENV)/bin/python --no-config --no-deps --no-build-isolation -e .
	$(UV) pip check -p $(IMAGE_VENV)/bin/python
	touch $@

# Both image environments resolve from their inputs to exactly the committed locks (any conflict or drift
# fails); the sam3 and sam3d_body tests pass under the sam3 image's own locked environment (torch 2.7.1+cu126 on the
# CPU), where sam_3d_body's estimator path imports with the lock's packages, and the sam3d tests under the sam3d image's (torch 2.5.1, numpy 1.26.4, pydantic 2.11.10 ...), whose pip check (the
# image's pip 25.3) prints exactly what the Dockerfile accepts (locks/sam3d-image.pip-check.txt), less the
# stand-in torch's CUDA 12.4 pins.
# The drift check resolves starting from the committed locks: uv keeps an existing output file's pins as
# preferences, so a lock changes only when an input did. `--exclude-newer` alone does not freeze a resolve here:
# the registry gains releases late, with upload dates before LOCK_DATE (shared/FACTS.md).
check-locks: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && start=$$SECONDS && \
	  cp $(foreach lock,$(LOCK_NAMES),locks/$(lock).lock) $$tmp/ && \
	  $(MAKE) --no-print-directory locks LOCK_OUT=$$tmp && \
	  for lock in $(LOCK_NAMES); do \
	    diff -u locks/$$lock.lock $$tmp/$$lock.lock >&2 || { echo "locks/$$lock.lock is not what its inputs resolve to: run make locks" >&2; exit 1; }; \
	  done && echo "check-locks: $(LOCK_NAMES) resolve unchanged from their inputs ($$((SECONDS - start)) s)"

check-images: setup java check-locks
	@$(MAKE) --no-print-directory $(IMAGE_STAMP) $(SAM3D_IMAGE_STAMP)
	$(IMAGE_VENV)/bin/python -c "import torch, sam3; print('sam3 image environment: torch', torch.__version__)"
	PYTHONPATH=$(SAM3D_BODY_ROOT) $(IMAGE_VENV)/bin/python -W ignore -c "from sam_3d_body import SAM3DBodyEstimator, \
	  load_sam_3d_body; import sam_3d_body.models.backbones.vit, sam_3d_body.models.heads.mhr_head; \
	  print('sam3 image environment: sam_3d_body imports (estimator, build_models, ViT backbone, MHR head)')"
	$(IMAGE_VENV)/bin/python -m pytest -q --models sam3,sam3d_body $(SAM3_TESTS) $(SAM3D_BODY_TESTS)
	$(SAM3D_IMAGE_VENV)/bin/python -m pip check | grep -vE '$(STAND_IN_TORCH_CHECK)' | LC_ALL=C sort \
	  | diff <(grep -v '^#' locks/sam3d-image.pip-check.txt) - && echo "sam3d image environment: pip check as in the image"
	$(SAM3D_IMAGE_VENV)/bin/python -c "import torch, numpy, pydantic; \
	  print('sam3d image environment: torch', torch.__version__, 'numpy', numpy.__version__, 'pydantic', pydantic.__version__)"
	$(SAM3D_IMAGE_VENV)/bin/python -m pytest -q --models sam3d $(SAM3D_TESTS)

# Wheels scripts/gpu_check.py needs on a GPU machine that has Python 3.12 and torch (2.11+cu130) but not sam3:
# sam3 and what the sam3 serving path imports that such a machine lacks (its packages: tests/data/
# gpu-machine-packages.txt; tests/unit/test_gpu_check.py runs the check and fails on any import outside that list,
# the stdlib and these), at the sam3 image lock's versions, as cp312 manylinux wheels in .whl/ (iopath has only
# an sdist: built here, it is pure Python). There:
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:. python3 scripts/gpu_check.py
GPU_CHECK_WHEELS := sam3 open-clip-torch ftfy wcwidth pycocotools diskcache boto3 botocore s3transfer jmespath \
  pydantic pydantic-core annotated-types typing-inspection
GPU_CHECK_BUILDS := iopath
GPU_CHECK_PLATFORMS := $(addprefix --platform manylinux_2_,17_x86_64 27_x86_64 28_x86_64 34_x86_64) --platform manylinux2014_x86_64
locked = $(1)==$$(sed -n 's/^$(1)==\([^ ]*\) .*/\1/p' locks/sam3-image.lock)
gpu-check-wheels: setup
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_CHECK_PLATFORMS) -d .whl $(foreach p,$(GPU_CHECK_WHEELS),"$(call locked,$(p))")
	$(BIN)/python -m pip wheel -q --no-deps -w .whl $(foreach p,$(GPU_CHECK_BUILDS),"$(call locked,$(p))")
	@ls .whl && du -sh .whl

clean:
	rm -rf build model-store/*.mar model-store/sam3 model-store/sam3d model-store/sam3d_body logs web/node_modules
