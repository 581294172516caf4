"""Every S3 call names the account that must own its bucket (ExpectedBucketOwner) and ends within a deadline:
a bucket of another account answers 403, an S3 that never answers (or trickles) 504, each naming the field.

S3 is moto's server over HTTP. moto 5.2.5 ignores ExpectedBucketOwner on every call (the first test checks
it), so :class:`OwnerCheck` does S3's part: a call whose header names another account than the bucket's is
answered with S3's 403 AccessDenied before it reaches moto."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from gen3d.errors import ServingError, StartupError
from gen3d.models import MODELS
from gen3d.serving.buckets import BucketPolicy
from gen3d.serving.schema import RawRequest
from gen3d.serving.storage import S3_TIMEOUTS, S3Location, S3Store, S3Timeouts
from tests.conftest import png_bytes
from tests.s3_faults import black_hole

pytestmark = pytest.mark.usefixtures("isolated_aws")

MOTO_ACCOUNT = "123456789012"  # moto's default account: what its STS answers
OTHER_ACCOUNT = "210987654321"
OURS, THEIRS = "gen3d-data", "gen3d-evil"  # both match the allow-list's glob; THEIRS belongs to another account
ALLOWED = {"GEN3D_ALLOWED_BUCKETS": "gen3d-*"}
HEADER = "x-amz-expected-bucket-owner"
ACCESS_DENIED = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"  # S3's body


class NoCalls:
    """A client that fails the test when called."""

    def __getattr__(self, name):
        raise AssertionError(f"{name} was called")


class Raw:
    """The raw stream an :class:`AWSResponse` reads its body from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs):
        yield self.body


class OwnerCheck:
    """S3's bucket owner condition in front of moto (a ``before-send`` handler): the bucket's account is
    ``owners[bucket]``; ``seen`` records every call's bucket and expected owner."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request, **kwargs):
        bucket = urlsplit(request.url).path.split("/")[1]  # path-style: moto's endpoint is an IP address
        expected = request.headers.get(HEADER)
        self.seen.append((bucket, expected.decode() if isinstance(expected, bytes) else expected))
        if self.seen[-1][1] is not None and self.seen[-1][1] != self.owners[bucket]:
            return AWSResponse(request.url, 403, {"Content-Type": "application/xml"}, Raw(ACCESS_DENIED))
        return None


@pytest.fixture
def buckets(sm_moto):
    """moto's S3 with our bucket and theirs, each holding a picture."""
    s3 = boto3.client("s3")
    for name in (OURS, THEIRS):
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="in/p.png", Body=png_bytes(5))
    return s3


def checked_store(env: dict[str, str]) -> tuple[S3Store, OwnerCheck]:
    store = S3Store.from_env({**ALLOWED, **env})
    check = OwnerCheck({OURS: MOTO_ACCOUNT, THEIRS: OTHER_ACCOUNT})
    store.client.meta.events.register("before-send.s3", check)
    return store, check


def failure(fn, *args) -> tuple[int, str, str]:
    with pytest.raises(ServingError) as err:
        fn(*args)
    return err.value.status, err.value.error_type, err.value.field


def test_moto_ignores_expected_bucket_owner_so_the_tests_check_it_themselves(buckets):
    """When this fails, moto checks the header itself and OwnerCheck can go."""
    assert buckets.get_object(Bucket=OURS, Key="in/p.png", ExpectedBucketOwner=OTHER_ACCOUNT)["Body"].read()
    buckets.put_object(Bucket=OURS, Key="x", Body=b"x", ExpectedBucketOwner=OTHER_ACCOUNT)


def test_the_owner_is_the_credentials_account_from_sts_or_the_variable(sm_moto):
    assert S3Store.from_env(ALLOWED).owner == MOTO_ACCOUNT  # moto's STS: GetCallerIdentity
    given = S3Store.from_env({**ALLOWED, "GEN3D_BUCKET_OWNER": OTHER_ACCOUNT}, sts=NoCalls())
    assert given.owner == OTHER_ACCOUNT and OTHER_ACCOUNT in given.describe()
    assert S3Store.from_env({}, sts=NoCalls()).owner is None  # no bucket allowed: no S3 call, no STS call either
    with pytest.raises(StartupError, match="GEN3D_BUCKET_OWNER must be a 12-digit"):
        S3Store.from_env({**ALLOWED, "GEN3D_BUCKET_OWNER": "1234"}, sts=NoCalls())
    with pytest.raises(ValueError, match="needs the account"):
        S3Store(NoCalls(), BucketPolicy(("gen3d-*",)), owner=None)


def test_start_up_stops_naming_the_variable_when_sts_is_unreachable():
    # isolated_aws: every endpoint is 127.0.0.1's discard port
    with pytest.raises(StartupError, match="sts:GetCallerIdentity failed.*set GEN3D_BUCKET_OWNER"):
        S3Store.from_env(ALLOWED)


def test_every_call_names_the_owner_and_a_bucket_of_ours_works(buckets):
    store, check = checked_store({})
    assert store.get_bytes(S3Location(OURS, "in/p.png"), "image_s3_key") == png_bytes(5)
    store.put_bytes(S3Location(OURS, "out/a.bin"), b"abc", "application/octet-stream")
    assert buckets.get_object(Bucket=OURS, Key="out/a.bin")["Body"].read() == b"abc"
    assert check.seen == [(OURS, MOTO_ACCOUNT), (OURS, MOTO_ACCOUNT)]


def test_a_bucket_of_another_account_answers_403_naming_the_field(buckets):
    store, check = checked_store({})
    assert failure(store.get_bytes, S3Location(THEIRS, "in/p.png"), "image_s3_key") == (
        403,
        "forbidden",
        "image_s3_key",
    )
    assert failure(store.put_bytes, S3Location(THEIRS, "out/a.bin"), b"abc", "image/png") == (
        403,
        "forbidden",
        "output_bucket",
    )
    assert "out/a.bin" not in {o["Key"] for o in buckets.list_objects_v2(Bucket=THEIRS)["Contents"]}
    # GEN3D_BUCKET_OWNER names the other account: now theirs is the one that works
    store, check = checked_store({"GEN3D_BUCKET_OWNER": OTHER_ACCOUNT})
    assert store.get_bytes(S3Location(THEIRS, "in/p.png"), "image_s3_key") == png_bytes(5)
    assert failure(store.get_bytes, S3Location(OURS, "in/p.png"), "mask_s3_key") == (403, "forbidden", "mask_s3_key")


def sam3_service(loaded, store: S3Store, tmp_path):
    """The sam3 service on the tiny model with ``store``."""
    from gen3d.sam3.cache import FeatureStore
    from gen3d.sam3.service import Sam3Service

    cache = FeatureStore(tmp_path / "cache", {"interactive": 10**9, "concept": 10**9}, 10**8, loaded.model_id,
                         loaded.device)  # fmt: skip
    return Sam3Service(loaded, store, "out/{user_id}/{session_id}", cache)


def test_a_request_naming_a_bucket_of_another_account_answers_403(buckets, tiny_loaded, tmp_path):
    """Through the sam3 service: the JSON answer names the field; a request on our bucket is served."""
    store, _ = checked_store({})
    service = sam3_service(tiny_loaded, store, tmp_path)
    ids = {"task": "get_embedding", "image_s3_key": "in/p.png", "user_id": "u", "session_id": "s"}
    bodies = [{**ids, "bucket": THEIRS}, {**ids, "bucket": OURS, "output_bucket": THEIRS}, {**ids, "bucket": OURS}]
    replies = service.handle([RawRequest(json.dumps(b).encode(), "application/json") for b in bodies])
    assert [r.status for r in replies] == [403, 403, 200]
    assert [r.body["error"]["field"] for r in replies[:2]] == ["image_s3_key", "output_bucket"]
    written = replies[2].body["output_s3_key"]
    assert buckets.get_object(Bucket=OURS, Key=written)["ContentLength"] > 0


def quick(**kwargs) -> S3Timeouts:
    return S3Timeouts(**{"connect_s": 0.5, "read_s": 0.5, "attempts": 2, "deadline_s": 1.5, **kwargs})


def store_at(url: str, timeouts: S3Timeouts) -> S3Store:
    client = boto3.client("s3", endpoint_url=url, config=timeouts.config())
    return S3Store(client, BucketPolicy((OURS,)), MOTO_ACCOUNT, timeouts)


def test_an_s3_that_never_answers_costs_a_504_naming_the_field_within_the_deadline():
    timeouts = quick()
    with black_hole() as hole:
        store = store_at(hole.url, timeouts)
        for call, field in (
            (lambda: store.get_bytes(S3Location(OURS, "k.png"), "image_s3_key"), "image_s3_key"),
            (lambda: store.put_bytes(S3Location(OURS, "o.bin"), b"x", "image/png"), "output_bucket"),
        ):
            started, before = time.monotonic(), hole.accepted
            assert failure(call) == (504, "storage_timeout", field)
            assert time.monotonic() - started <= timeouts.unanswered_s + 1
            assert hole.accepted - before == timeouts.attempts  # bounded retries: one connection per attempt


class Trickle(http.server.BaseHTTPRequestHandler):
    """Answers a GET with a 4 MiB body sent 16 KiB every 50 ms (13 s in all): never idle past a read timeout."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(4 << 20))
        self.end_headers()
        for _ in range(256):
            try:
                self.wfile.write(b"\0" * (16 << 10))
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(0.05)

    def log_message(self, *args):
        pass


def test_a_body_that_trickles_is_cut_at_the_deadline():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        timeouts = quick(deadline_s=1.0)
        store = store_at(f"http://127.0.0.1:{server.server_address[1]}", timeouts)
        started = time.monotonic()
        assert failure(store.get_bytes, S3Location(OURS, "big.png"), "image_s3_key") == (
            504,
            "storage_timeout",
            "image_s3_key",
        )
        assert time.monotonic() - started < 4  # the whole body would take 13 s
    finally:
        server.shutdown()
        server.server_close()


def test_the_servers_s3_calls_end_well_within_every_models_response_timeout(sm_moto):
    """The defaults: no call outlasts its deadline, which is a tenth of TorchServe's shortest responseTimeout
    and half of SageMaker's 60 s real-time invocation; the server's clients run with them."""
    assert S3_TIMEOUTS.unanswered_s <= S3_TIMEOUTS.deadline_s
    assert S3_TIMEOUTS.deadline_s <= min(spec.response_timeout_s for spec in MODELS.values()) / 10
    assert S3_TIMEOUTS.deadline_s <= 60 / 2
    config = S3Store.from_env(ALLOWED).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (S3_TIMEOUTS.connect_s, S3_TIMEOUTS.read_s)
    assert config.retries["total_max_attempts"] == S3_TIMEOUTS.attempts


def test_inline_images_never_touch_s3_or_sts(tiny_loaded, tmp_path):
    """Without an allow-list (`make serve` without BUCKETS) the server starts and serves with no AWS at all."""
    store = S3Store.from_env({}, sts=NoCalls())
    store.client = NoCalls()
    service = sam3_service(tiny_loaded, store, tmp_path)
    body = {"task": "get_embedding", "image_base64": base64.b64encode(png_bytes(6)).decode()}
    assert service.handle([RawRequest(json.dumps(body).encode(), "application/json")])[0].status == 200
