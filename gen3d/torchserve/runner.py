"""Starting TorchServe and waiting until its models can answer: used by `make serve`, the SageMaker
``serve`` entrypoint and the tests, so all three start the server the same way."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def config_home(env: dict[str, str] | None = None) -> Path:
    """The folder holding config.properties and metrics.yaml: ``GEN3D_HOME``, else the checkout gen3d was
    imported from (an editable install); a clear error when neither holds them."""
    env = os.environ if env is None else env
    checkout = Path(__file__).resolve().parents[2]
    home = Path(env["GEN3D_HOME"]) if env.get("GEN3D_HOME") else checkout
    for name in ("config.properties", "metrics.yaml"):
        if not (home / name).is_file():
            raise FileNotFoundError(f"{home / name} not found (set GEN3D_HOME to the folder with {name})")
    return home


# keys whose relative paths TorchServe reads from its working folder: the copy names them absolutely, since it lives
# elsewhere than ``base`` (a worker that could not find metrics.yaml died)
PATH_KEYS = ("model_store", "metrics_config")


def write_config(base: Path, dest: Path, overrides: dict[str, str]) -> Path:
    """Copies TorchServe's ``config.properties`` with some keys replaced (or added); the relative paths it keeps
    (:data:`PATH_KEYS`) are made absolute against ``base``'s folder."""
    lines, seen = [], set()
    for line in base.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(.*?)\s*$", line)
        key = match.group(1) if match else None
        if key in overrides:
            lines.append(f"{key}={overrides[key]}")
            seen.add(key)
        elif key in PATH_KEYS:
            lines.append(f"{key}={base.resolve().parent / match.group(2)}")  # an absolute value stays as it is
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    dest.write_text("\n".join(lines) + "\n")
    return dest


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def loopback_config(home: Path, dest: Path, model_store: Path) -> Path:
    """``home``'s config.properties with every API on 127.0.0.1 at free ports (gRPC's included: its default ports
    would collide between TorchServes of one machine), for tests and benchmarks."""
    ports = free_ports(5)
    return write_config(
        home / "config.properties",
        dest,
        {
            "inference_address": f"http://127.0.0.1:{ports[0]}",
            "management_address": f"http://127.0.0.1:{ports[1]}",
            "metrics_address": f"http://127.0.0.1:{ports[2]}",
            "grpc_inference_port": str(ports[3]),
            "grpc_management_port": str(ports[4]),
            "model_store": str(model_store),
        },
    )


def read_config(path: Path) -> dict[str, str]:
    """``key=value`` pairs of a properties file (comments skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def _get_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class TorchServe:
    """A running TorchServe: its process and API addresses."""

    process: subprocess.Popen
    inference_url: str
    management_url: str
    metrics_url: str

    def model_status(self, name: str) -> list[str]:
        """Worker states of model ``name`` (e.g. ``["READY"]``); empty when not registered yet."""
        try:
            described = _get_json(f"{self.management_url}/models/{name}")
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [w.get("status", "") for entry in described for w in entry.get("workers", [])]

    def wait_ready(self, models: list[str], timeout: float) -> None:
        """Returns when every model has a READY worker; raises if TorchServe exits or time runs out."""
        deadline = time.monotonic() + timeout
        pending = list(models)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with code {self.process.returncode} before {pending} were ready")
            pending = [m for m in pending if "READY" not in self.model_status(m)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"models {pending} not READY within {timeout:.0f} s")
            time.sleep(1)
        log.info("models ready: %s", ", ".join(models))

    def terminate(self) -> None:
        """Asks TorchServe and its workers to stop (SIGTERM to the process group); safe in a signal handler."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """Stops TorchServe and its workers (the whole process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode


def _local_url(address: str) -> str:
    return address.replace("0.0.0.0", "127.0.0.1").rstrip("/")


def start(
    config: Path,
    model_store: Path,
    models: str = "all",
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    stdout=None,
) -> TorchServe:
    """Starts ``torchserve --foreground`` in its own process group with ``config`` and ``model_store``."""
    bin_dir = Path(sys.executable).parent
    torchserve = bin_dir / "torchserve"
    cmd = [
        str(torchserve if torchserve.exists() else "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config),
        "--model-store",
        str(model_store),
        "--models",
        models,
    ]
    run_env = dict(os.environ if env is None else env)
    run_env["PATH"] = f"{bin_dir}{os.pathsep}{run_env.get('PATH', '')}"  # workers use this Python
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        run_env.setdefault("LOG_LOCATION", str(log_dir))
        run_env.setdefault("METRICS_LOCATION", str(log_dir))
    log.info("starting %s", " ".join(cmd))
    process = subprocess.Popen(
        cmd,
        env=run_env,
        cwd=str(config.resolve().parent),
        start_new_session=True,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout else None,
    )
    props = read_config(config)
    return TorchServe(
        process=process,
        inference_url=_local_url(props.get("inference_address", "http://127.0.0.1:8080")),
        management_url=_local_url(props.get("management_address", "http://127.0.0.1:8081")),
        metrics_url=_local_url(props.get("metrics_address", "http://127.0.0.1:8082")),
    )
