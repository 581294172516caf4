# syntax=docker/dockerfile:1
# Gen3D serving images: TorchServe 0.12.0 with SAM 3 (target sam3), SAM 3D Body (target sam3d_body: the sam3
# image plus sam-3d-body's source tree) or SAM 3D Objects (target sam3d).
#
#   docker build --target sam3  -t gen3d:sam3 .
#   docker build --target sam3d_body -t gen3d:sam3d_body .   # --build-arg SAM3D_BODY_COMMIT=<full SHA> to move it
#   docker build --target sam3d -t gen3d:sam3d .   # --build-arg SAM3D_OBJECTS_COMMIT=<full SHA> to move it
#
# No weights or model archives inside: SageMaker copies the uncompressed archive uploaded by
# scripts/sagemaker_deploy.py to /opt/ml/model; locally, mount one there.
# SageMaker starts a container as `docker run IMAGE serve`. There is deliberately no ENTRYPOINT, so
# `serve` resolves on PATH to /usr/local/bin/serve (scripts/serve); CMD ["serve"] makes a bare
# `docker run IMAGE` behave the same.
# The containers run as the unprivileged user gen3d (uid 1000, home /home/gen3d). `serve` only reads /opt/ml/model
# (SageMaker mounts it read-only) and /opt/gen3d; it writes TorchServe's configuration, logs, pid file and unpacked
# archives, the embedding cache and sam3d's rewritten configs under the temporary folder (/tmp), and Triton's and
# torch's caches under $HOME. AWS's documentation says SageMaker "expects all containers to run with root users":
# `--build-arg RUN_AS=root` builds an image that does (README "Versions and why").

# ============================================================================ base (CUDA 12.6)
# CUDA 12.6.3: SAM 3 needs CUDA >= 12.6; 12.6 userland also runs on SageMaker's 535/550 drivers through
# CUDA minor-version compatibility. The runtime tag without cuDNN: torch 2.7.1 brings its own cuDNN 9
# (nvidia-cudnn-cu12 in the lock); the sam3 stack is all wheels (the sam3 stage adds the one C compiler Triton needs).
# Ubuntu 22.04: what the CUDA 12.1 image of the sam3d target is built on too, so both targets share
# one OS and one Python build.
FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04 AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Apt versions are not pinned (DL3008): the CUDA images and the deadsnakes PPA drop superseded builds,
# so exact pins would break rebuilds; the Python side, which matters for behaviour, is pinned.
# Python 3.11 from deadsnakes: jammy's own python3.11 is a 3.11.0 release candidate; 3.11 is the
#   project's Python and the only one bpy==4.3.0 (a sam-3d-objects requirement) has wheels for.
# openjdk-17-jre-headless: TorchServe 0.12 runs its frontend on Java 17.
# gnupg and software-properties-common only add the PPA (apt verifies it with gpgv, part of apt): purged after use.
# pip 25.3 / setuptools 80.9.0 / wheel 0.45.1 from locks/image-tools.lock (hashed): current tools that still
#   ship pkg_resources (setuptools >= 81 removes it; older sdists such as pytorch3d's build import it).
COPY locks/image-tools.lock /tmp/image-tools.lock
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless \
 && apt-get purge -y --auto-remove gnupg software-properties-common \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/image-tools.lock \
 && rm /tmp/image-tools.lock \
 && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin gen3d

# ============================================================================ sam3
FROM base AS sam3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C compiler and Python's headers: on a GPU, sam3 fills mask holes (and removes sprinkles) with a Triton
# kernel (sam3.perflib.triton.connected_components), and Triton compiles a small C helper (its CUDA launcher,
# against Python.h) the first time a kernel runs in a process. Without them that launch raises, sam3 warns
# "Skipping the post-processing step" and serves masks the tests never checked. libc6-dev: the C headers,
# only a recommendation of gcc.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev python3.11-dev \
 && rm -rf /var/lib/apt/lists/*
# Only from the lock (make locks; make check-images installs the same file here and runs the sam3 tests under
# it): every package pinned with its hashes, torch 2.7.1 included (PyPI's Linux x86_64 torch 2.7.1 is the
# CUDA 12.6 build: SAM 3 needs torch >= 2.7 and CUDA >= 12.6; the wheels bundle their CUDA libraries).
# --no-deps: the lock is complete, so anything missing fails `pip check` instead of being fetched unhashed;
# --no-build-isolation: the two sdists (iopath, nvgpu) build with the base stage's setuptools/wheel, which
# the lock pins too, instead of fetching build tools without hashes.
COPY locks/sam3-image.lock /tmp/sam3-image.lock
RUN pip install --no-cache-dir --require-hashes --no-deps --no-build-isolation -r /tmp/sam3-image.lock \
 && pip check \
 && rm /tmp/sam3-image.lock
# The gen3d package, installed once (archives carry only their handler file, which imports it);
# GEN3D_HOME holds config.properties and metrics.yaml (config.properties names it as metrics_config).
WORKDIR /opt/gen3d
COPY pyproject.toml ./
COPY gen3d ./gen3d
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf build gen3d.egg-info
COPY config.properties metrics.yaml ./
COPY --chmod=0755 scripts/serve /usr/local/bin/serve
ENV GEN3D_HOME=/opt/gen3d \
    GEN3D_MODEL=sam3
# The CUDA the image's torch bundles and the oldest driver that runs it (gen3d/models.py says the same; a unit
# test compares them; gen3d-deploy picks the endpoint's driver from it).
LABEL gen3d.cuda-version="12.6" \
      gen3d.min-nvidia-driver="525"
ARG RUN_AS=gen3d
USER $RUN_AS
EXPOSE 8080
CMD ["serve"]

# ============================================================================ sam3d-body-source (not shipped)
# facebookresearch/sam-3d-body has no setup file and no release: its sam_3d_body tree (and its LICENSE, the SAM
# License, which goes with every copy) at a pinned commit, checked out here with git, which the image does not get.
# SAM3D_BODY_COMMIT must be a full 40-hex commit SHA (a branch or tag could move under the same name). The default
# is the commit gen3d/sam3d_body was written and checked against, whose sam_3d_body tree PyPI's sam3d 0.1.2 carries
# byte for byte (the CPU demo and `make check-images` use that copy): b5c765a0d89d789985e186d396315e7590887b94
# ("add arXiv", 2026-02-19).
FROM base AS sam3d-body-source
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG SAM3D_BODY_COMMIT=b5c765a0d89d789985e186d396315e7590887b94
# hadolint ignore=DL3008
RUN printf '%s' "$SAM3D_BODY_COMMIT" | grep -Eqx '[0-9a-f]{40}' \
      || { echo "SAM3D_BODY_COMMIT must be a full 40-hex commit SHA, got '$SAM3D_BODY_COMMIT'" >&2; exit 1; } \
 && apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/* \
 && git clone --filter=blob:none https://github.com/facebookresearch/sam-3d-body /tmp/sam-3d-body \
 && git -C /tmp/sam-3d-body checkout --detach "$SAM3D_BODY_COMMIT" \
 && mkdir /opt/sam-3d-body \
 && cp -r /tmp/sam-3d-body/sam_3d_body /tmp/sam-3d-body/LICENSE /opt/sam-3d-body/

# ============================================================================ sam3d_body
# SAM 3D Body runs in the sam3 image (README "Versions and why"): upstream is tested on recent torch (its INSTALL
# says "install PyTorch" without a version) and its inference path is plain PyTorch, timm and OpenCV, so the sam3
# image's torch 2.7.1+cu126 runs it; the few packages that path imports (roma, yacs, omegaconf, braceexpand,
# opencv-python-headless, pytorch-lightning) are in locks/sam3-image.lock. This target adds only the sam_3d_body
# tree (imported through PYTHONPATH, as the sam3d image does with sam-3d-objects) and the model to serve; its
# labels, user and command are the sam3 stage's.
FROM sam3 AS sam3d_body
COPY --from=sam3d-body-source /opt/sam-3d-body /opt/sam-3d-body
ENV PYTHONPATH=/opt/sam-3d-body \
    GEN3D_MODEL=sam3d_body

# ============================================================================ sam3d-build (not shipped)
# SAM 3D Objects is built and tested by its authors on torch 2.5.1+cu121 (xformers 0.0.28.post3,
# spconv-cu121, kaolin 0.17.0 wheels for torch-2.5.1_cu121). This stage has the CUDA 12.1 toolkit (nvcc,
# headers) and a C++ compiler: it installs the sam3d environment into /opt/venv and compiles pytorch3d, gsplat and
# flash_attn into wheels against it (/wheels). The `sam3d` stage below copies /opt/venv and installs those wheels;
# nothing else of this stage (compilers, headers, TORCH_CUDA_ARCH_LIST, MAX_JOBS) is in the image.
# The devel tag without cuDNN: torch 2.5.1+cu121 brings cuDNN 9 (nvidia-cudnn-cu12 9.1.0.70 in the lock).
FROM nvidia/cuda:12.1.1-devel-ubuntu22.04 AS sam3d-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Same Python as `base` (deadsnakes 3.11, the venv at /opt/venv, the locked pip/setuptools/wheel), plus
# python3.11-dev, build-essential, ninja-build and git to build the CUDA extensions from their commits.
COPY locks/image-tools.lock /tmp/image-tools.lock
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
        build-essential ninja-build git \
 && apt-get purge -y --auto-remove gnupg software-properties-common \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/image-tools.lock \
 && rm /tmp/image-tools.lock
# SAM3D_OBJECTS_COMMIT must be a full 40-hex commit SHA of https://github.com/facebookresearch/sam-3d-objects
# (a branch or tag could move under the same name). The default is the commit gen3d/sam3d/pipeline.py was
# written and checked against: cf066761706cd02b07e2fc6274570ec8cdafb683 ("Add BibTeX.", 2025-11-21).
ARG SAM3D_OBJECTS_COMMIT=cf066761706cd02b07e2fc6274570ec8cdafb683
RUN printf '%s' "$SAM3D_OBJECTS_COMMIT" | grep -Eqx '[0-9a-f]{40}' \
      || { echo "SAM3D_OBJECTS_COMMIT must be a full 40-hex commit SHA, got '$SAM3D_OBJECTS_COMMIT'" >&2; exit 1; } \
 && git clone --filter=blob:none https://github.com/facebookresearch/sam-3d-objects /opt/sam-3d-objects \
 && git -C /opt/sam-3d-objects checkout --detach "$SAM3D_OBJECTS_COMMIT" \
 && rm -rf /opt/sam-3d-objects/.git
WORKDIR /opt/sam-3d-objects
# Upstream's setup (doc/setup.md; its requirement files are vendored in third_party/sam-3d-objects at the same
# commit, a unit test keeps the two commits equal), from locks/, all --no-deps:
# 1. torch/torchvision/torchaudio 2.5.1+cu121 and xformers from PyTorch's cu121 index (exact versions; that
#    index cannot be reached where the locks are made, so these four carry no hashes);
# 2. everything else that any index serves, from PyPI, hash-locked (sam-3d-objects' requirements.txt,
#    requirements.p3d.txt, requirements.inference.txt, our serving pins, the dependencies of the builds);
# then upstream's hydra patch (it fetches one file at a pinned commit).
COPY locks/sam3d-image.cuda121.txt locks/sam3d-image.lock /tmp/locks/
RUN pip install --no-cache-dir --no-deps -r /tmp/locks/sam3d-image.cuda121.txt \
 && pip install --no-cache-dir --require-hashes --no-deps --no-build-isolation -r /tmp/locks/sam3d-image.lock \
 && python patching/hydra
# 3. Wheels of what no index serves for this stack, built against the installed torch with the locked build tools
#    (no build isolation): pytorch3d, gsplat, MoGe and utils3d at their git commits, kaolin 0.17.0 from NVIDIA's
#    find-links page (sam3d-image.builds.txt), and flash_attn 2.8.3 from PyPI's sdist, checked against its
#    sha256 (sam3d-image.flash-attn.txt). FLASH_ATTENTION_FORCE_BUILD: without it flash_attn's setup.py replaces
#    the build with a wheel downloaded from GitHub that no hash pins.
# CUDA kernels are compiled without a GPU (FORCE_CUDA) for A100 (8.0), A10G (8.6), L4/L40S (8.9) and H100 (9.0),
# the GPUs of the instance types gen3d/sagemaker/gpus.py knows; flash_attn builds sm_80 (which 8.6 and 8.9 also
# run) and sm_90. MAX_JOBS parallel compilations: each flash_attn one peaks at ~9 GB of RAM (README "Versions and
# why": the build host's needs); set it to what the build host holds.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
ARG FLASH_ATTN_CUDA_ARCHS="80;90"
ARG MAX_JOBS=4
ARG FORCE_CUDA=1
ARG FLASH_ATTENTION_FORCE_BUILD=TRUE
COPY locks/sam3d-image.builds.txt locks/sam3d-image.flash-attn.txt /tmp/locks/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels -r /tmp/locks/sam3d-image.builds.txt \
 && pip wheel --no-cache-dir --no-deps --no-build-isolation --require-hashes -w /wheels \
        -r /tmp/locks/sam3d-image.flash-attn.txt \
 && ls /wheels

# ============================================================================ sam3d
# The runtime tag of the same CUDA 12.1 without cuDNN (torch brings cuDNN 9): no compiler, no CUDA headers. Same
# OS / Python / Java layer as `base` above (keep the two in sync), plus the X/GL libraries that bpy, open3d and
# opencv (sam-3d-objects requirements) load at import. No python3.11-venv: the venv comes from sam3d-build.
FROM nvidia/cuda:12.1.1-runtime-ubuntu22.04 AS sam3d
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 openjdk-17-jre-headless \
        libgl1 libegl1 libglib2.0-0 libgomp1 libsm6 libxext6 libxrender1 libxi6 libxxf86vm1 \
        libxfixes3 libxkbcommon0 \
 && apt-get purge -y --auto-remove gnupg software-properties-common \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin gen3d
# The environment sam3d-build installed (steps 1-2 and the hydra patch) and the sam-3d-objects checkout, then the
# wheels it built (read through a mount: they never become a layer of the image), then pip check. pip check also
# compares torch 2.5.1+cu121's own requirements with the CUDA 12.1 libraries the lock installed. Its exit status
# counts: a failure passes only when pip printed exactly the lines of locks/sam3d-image.pip-check.txt (three
# wheels whose WHEEL files carry tags that do not match their file names; one reason per line there).
COPY --from=sam3d-build /opt/venv /opt/venv
COPY --from=sam3d-build /opt/sam-3d-objects /opt/sam-3d-objects
COPY locks/sam3d-image.pip-check.txt /tmp/sam3d-image.pip-check.txt
RUN --mount=type=bind,from=sam3d-build,source=/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && if ! pip check > /tmp/pip-check.txt; then \
      LC_ALL=C sort -o /tmp/pip-check.txt /tmp/pip-check.txt \
      && grep -v '^#' /tmp/sam3d-image.pip-check.txt | diff - /tmp/pip-check.txt; \
    fi \
 && rm /tmp/pip-check.txt /tmp/sam3d-image.pip-check.txt
# sam3d_objects itself is imported from the checkout (PYTHONPATH below), as its wheel would only carry *.py files.
WORKDIR /opt/gen3d
COPY pyproject.toml ./
COPY gen3d ./gen3d
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf build gen3d.egg-info
COPY config.properties metrics.yaml ./
COPY --chmod=0755 scripts/serve /usr/local/bin/serve
ENV GEN3D_HOME=/opt/gen3d \
    PYTHONPATH=/opt/sam-3d-objects \
    GEN3D_MODEL=sam3d
# As in the sam3 target: torch 2.5.1+cu121's CUDA and the oldest driver that runs it (gen3d/models.py).
LABEL gen3d.cuda-version="12.1" \
      gen3d.min-nvidia-driver="525"
ARG RUN_AS=gen3d
USER $RUN_AS
EXPOSE 8080
CMD ["serve"]
