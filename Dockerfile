# syntax=docker/dockerfile:1
# Gen3D serving images: TorchServe 0.12.0 with SAM 3 (target sam3) or SAM 3D Objects (target sam3d).
#
#   docker build --target sam3  -t gen3d:sam3 .
#   docker build --target sam3d -t gen3d:sam3d .   # --build-arg SAM3D_OBJECTS_COMMIT=<full SHA> to move it
#
# No weights or model archives inside: SageMaker copies the uncompressed archive uploaded by
# scripts/sagemaker_deploy.py to /opt/ml/model; locally, mount one there.
# SageMaker starts a container as `docker run IMAGE serve`. There is deliberately no ENTRYPOINT, so
# `serve` resolves on PATH to /usr/local/bin/serve (scripts/serve); CMD ["serve"] makes a bare
# `docker run IMAGE` behave the same.
# The containers run as root: SageMaker mounts /opt/ml as root, and TorchServe writes its logs
# and unpacked archives next to them.

# ============================================================================ base (CUDA 12.6)
# CUDA 12.6.3: SAM 3 needs CUDA >= 12.6; 12.6 userland also runs on SageMaker's 535/550 drivers through
# CUDA minor-version compatibility. cudnn-runtime: no compiler needed, the sam3 stack is all wheels.
# Ubuntu 22.04: what the CUDA 12.1 image of the sam3d target is built on too, so both targets share
# one OS and one Python build.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS base
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
# pip 25.3 / setuptools 80.9.0 / wheel 0.45.1: current tools that still ship pkg_resources
#   (setuptools >= 81 removes it; older sdists such as pytorch3d's build import it).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir pip==25.3 setuptools==80.9.0 wheel==0.45.1

# ============================================================================ sam3
FROM base AS sam3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# torch 2.7.1 + torchvision 0.22.1 (a released pair) from PyTorch's cu126 index: SAM 3 needs torch >= 2.7
# with CUDA >= 12.6, and 2.7.1 is the oldest such release with the fixes of the 2.7 line. The wheels
# bundle their CUDA libraries. requirements.txt pins the torch of the CPU/dev environment, so those two
# lines are dropped here and the constraints file makes pip fail, rather than swap torch for a PyPI
# build, if a requirement wanted another one.
ARG TORCH_VERSION=2.7.1
ARG TORCHVISION_VERSION=0.22.1
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu126 \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > /tmp/constraints.txt \
 && grep -vE '^(torch|torchvision)==' /tmp/requirements.txt > /tmp/requirements-image.txt \
 && pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements-image.txt \
 && rm /tmp/requirements.txt /tmp/requirements-image.txt /tmp/constraints.txt
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
EXPOSE 8080
CMD ["serve"]

# ============================================================================ base-cu121 (sam3d)
# SAM 3D Objects is built and tested by its authors on torch 2.5.1+cu121 (xformers 0.0.28.post3,
# spconv-cu121, kaolin 0.17.0 wheels for torch-2.5.1_cu121). The devel image (nvcc, headers) is needed
# because pytorch3d and gsplat are installed from git and compile CUDA code, as does flash_attn
# when no prebuilt wheel matches. cudnn8: what torch 2.5.1+cu121 was built against.
# Same OS / Python / Java layer as `base` above: keep the two in sync.
FROM nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04 AS base-cu121
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Extra over `base`: python3.11-dev, build-essential, ninja-build and git to build the CUDA extensions;
# the X/GL libraries that bpy, open3d and opencv (sam-3d-objects requirements) load at import.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
        openjdk-17-jre-headless build-essential ninja-build git \
        libgl1 libegl1 libglib2.0-0 libgomp1 libsm6 libxext6 libxrender1 libxi6 libxxf86vm1 \
        libxfixes3 libxkbcommon0 \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir pip==25.3 setuptools==80.9.0 wheel==0.45.1

# ============================================================================ sam3d
FROM base-cu121 AS sam3d
# Restated: hadolint checks each stage on its own (the value is inherited from base-cu121 anyway).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# SAM3D_OBJECTS_COMMIT must be a full 40-hex commit SHA of https://github.com/facebookresearch/sam-3d-objects
# (a branch or tag could move under the same name). The default is the commit gen3d/sam3d_pipeline.py was
# written and checked against: cf066761706cd02b07e2fc6274570ec8cdafb683 ("Add BibTeX.", 2025-11-21).
ARG SAM3D_OBJECTS_COMMIT=cf066761706cd02b07e2fc6274570ec8cdafb683
# Compile CUDA kernels without a GPU in the build (FORCE_CUDA) for A100 (8.0), A10G (8.6),
# L4/L40S (8.9) and H100 (9.0): the GPUs of the instance types gen3d/sagemaker_control.py knows.
ENV TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0" \
    FORCE_CUDA=1 \
    MAX_JOBS=8
RUN printf '%s' "$SAM3D_OBJECTS_COMMIT" | grep -Eqx '[0-9a-f]{40}' \
      || { echo "SAM3D_OBJECTS_COMMIT must be a full 40-hex commit SHA, got '$SAM3D_OBJECTS_COMMIT'" >&2; exit 1; } \
 && git clone --filter=blob:none https://github.com/facebookresearch/sam-3d-objects /opt/sam-3d-objects \
 && git -C /opt/sam-3d-objects checkout --detach "$SAM3D_OBJECTS_COMMIT"
WORKDIR /opt/sam-3d-objects
# The upstream setup (doc/setup.md), step by step, with torch pinned by a constraints file:
# 1. torch 2.5.1 / torchvision 0.20.1 / torchaudio 2.5.1 (a released triple) from the cu121 index;
# 2. the package, editable as upstream installs it (its wheel would only carry *.py files), its
#    requirements.txt and the serving packages pinned in our requirements.txt, in one resolve so a
#    conflict fails the build (pillow, numpy and the sam3 stack are left to sam-3d-objects' pins);
# 3. requirements.p3d.txt (pytorch3d from git, flash_attn 2.8.3) and requirements.inference.txt
#    (kaolin 0.17.0 from NVIDIA's find-links page, gsplat from git) without build isolation, as they
#    compile against the installed torch;
# 4. upstream's hydra patch (fetches one file at a pinned commit).
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu121 \
        torch==2.5.1+cu121 torchvision==0.20.1+cu121 torchaudio==2.5.1+cu121 \
 && printf 'torch==2.5.1+cu121\ntorchvision==0.20.1+cu121\ntorchaudio==2.5.1+cu121\n' > /tmp/constraints.txt \
 && grep -E '^(torchserve|torch-model-archiver|pyyaml|boto3|botocore|nvgpu|safetensors|filelock|psutil|pycocotools|plyfile|trimesh)==' \
        /tmp/requirements.txt > /tmp/requirements-serving.txt \
 && export PIP_EXTRA_INDEX_URL="https://pypi.ngc.nvidia.com https://download.pytorch.org/whl/cu121" \
 && pip install --no-cache-dir -c /tmp/constraints.txt -e . -r /tmp/requirements-serving.txt \
 && pip install --no-cache-dir --no-build-isolation -c /tmp/constraints.txt -r requirements.p3d.txt \
 && PIP_FIND_LINKS="https://nvidia-kaolin.s3.us-east-2.amazonaws.com/torch-2.5.1_cu121.html" \
    pip install --no-cache-dir --no-build-isolation -c /tmp/constraints.txt -r requirements.inference.txt \
 && python patching/hydra \
 && rm /tmp/requirements.txt /tmp/requirements-serving.txt /tmp/constraints.txt
WORKDIR /opt/gen3d
COPY pyproject.toml ./
COPY gen3d ./gen3d
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf build gen3d.egg-info
COPY config.properties metrics.yaml ./
COPY --chmod=0755 scripts/serve /usr/local/bin/serve
ENV GEN3D_HOME=/opt/gen3d \
    PYTHONPATH=/opt/sam-3d-objects \
    GEN3D_MODEL=sam3d
EXPOSE 8080
CMD ["serve"]
