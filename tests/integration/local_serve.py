"""gen3d-serve-local (what `make serve` runs) started for a test and stopped by SIGTERM, as a person stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO


@dataclass
class LocalServe:
    config: Path  # the loopback config it was given
    port: int  # TorchServe's inference port
    output: Path  # what it printed (stdout and stderr)
    logs: Path

    def text(self) -> str:
        return self.output.read_text()


@contextmanager
def serve_local(tmp_path: Path, store: Path, env: dict[str, str], *args: str, ready: str) -> Iterator[LocalServe]:
    """Run gen3d-serve-local on ``store`` with a loopback config of free ports and its own TMPDIR (the torchserve
    CLI refuses to start while the pid file there names another TorchServe); yield once it printed ``ready``."""
    from gen3d.torchserve import runner

    config = runner.loopback_config(REPO, tmp_path / "config.properties", store)
    port = int(runner.read_config(config)["inference_address"].rsplit(":", 1)[1])
    (tmp_path / "tmp").mkdir()
    served = LocalServe(config, port, tmp_path / "serve.out", tmp_path / "logs")
    command = [str(Path(sys.executable).parent / "gen3d-serve-local"), "--config", str(config),
               "--model-store", str(store), "--logs", str(served.logs), *args]  # fmt: skip
    out = open(served.output, "wb")  # noqa: SIM115 - a pipe would fill up and block TorchServe
    proc = subprocess.Popen(
        command, env={**env, "TMPDIR": str(tmp_path / "tmp")}, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while ready not in served.text():
            assert proc.poll() is None and time.monotonic() < deadline, served.text()[-3000:]
            time.sleep(0.2)
        yield served
    finally:
        os.killpg(proc.pid, 15)
        assert proc.wait(60) is not None
        out.close()
