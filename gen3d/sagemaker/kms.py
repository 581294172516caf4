"""Where ``--kms-key-id`` applies, and the key as IAM policies name it.

The key encrypts the model data the deploy uploads (SSE-KMS), the async output and failure objects SageMaker
writes (``AsyncInferenceConfig.OutputConfig.KmsKeyId``) and, on instance types without local storage, the
endpoint's ML storage volume (``EndpointConfig.KmsKeyId``). Instance types with NVMe instance storage encrypt it
with the instance's hardware module, and CreateEndpointConfig fails when given a ``KmsKeyId`` for one of them
(CreateEndpointConfig's API reference); every GPU family gen3d deploys to (``gpus.INSTANCE_GPUS``) has one, so
for those the volume key is left out and the deploy says why.
"""

from __future__ import annotations

import re
from typing import Any

# instance families with NVMe instance storage (EC2 instance specifications)
INSTANCE_STORE_FAMILIES = frozenset({"ml.g4dn", "ml.g5", "ml.g6", "ml.g6e", "ml.p4d", "ml.p4de", "ml.p5"})
KEY_ARN_RE = re.compile(r"^arn:aws[\w-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/.+$")


def volume_kms_key(instance_type: str, kms_key_id: str | None) -> str | None:
    """The endpoint config's ``KmsKeyId``: None on instance types whose volume is NVMe instance storage."""
    family = instance_type.rsplit(".", 1)[0]
    return None if family in INSTANCE_STORE_FAMILIES else kms_key_id


def key_statement(sid: str, actions: list[str], kms_key_id: str, *, region: str, account: str) -> dict[str, Any]:
    """An Allow statement for ``actions`` on the key ``--kms-key-id`` names: a key id or ARN becomes the key's
    ARN; an alias (IAM cannot name a key by its alias in Resource) becomes any key with that alias."""
    alias = kms_key_id if kms_key_id.startswith("alias/") else None
    if KEY_ARN_RE.match(kms_key_id):
        kind, _, rest = kms_key_id.split(":", 5)[5].partition("/")
        if kind == "key":
            return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": [kms_key_id]}
        alias = f"alias/{rest}"
    if alias:
        return {
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": [alias]}},
        }
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": [f"arn:aws:kms:{region}:{account}:key/{kms_key_id}"],
    }
