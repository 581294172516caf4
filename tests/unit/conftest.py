"""Fixtures of the SageMaker control-plane tests: a clean AWS environment, moto's server on 127.0.0.1 and
stubbed clients. Test modules opt in with ``pytestmark = pytest.mark.usefixtures("isolated_aws")``."""

from __future__ import annotations

import os

import pytest
import requests
from botocore.stub import Stubber

from tests.unit.sagemaker_support import clean_aws_env, client


@pytest.fixture
def isolated_aws(monkeypatch):
    """Dummy credentials, fixed region, no profile files, endpoints on 127.0.0.1 only."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in clean_aws_env({}).items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def sm_moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sm_moto(sm_moto_server, monkeypatch):
    """Fresh moto state; boto3 clients made now go to the local moto server."""
    requests.post(f"{sm_moto_server}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", sm_moto_server)
    return sm_moto_server


@pytest.fixture
def stubbed():
    """Stubbed sagemaker / application-autoscaling / cloudwatch clients (activated)."""
    made = {name: client(name) for name in ("sagemaker", "application-autoscaling", "cloudwatch")}
    stubs = {name: Stubber(c) for name, c in made.items()}
    for stub in stubs.values():
        stub.activate()
    yield made, stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()
