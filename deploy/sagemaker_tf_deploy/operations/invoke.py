"""`deploy invoke` against an endpoint: one InvokeEndpoint call, and --softmax on its answer.

Reason to change: the runtime call or how its answer is post-processed.
"""

from __future__ import annotations

import json
import math

import botocore.exceptions

from ..core import checks
from ..core.aws import Aws, error_message
from ..core.errors import DeployError


def runtime_call(call, what: str, required: dict, **optional) -> dict:
    """One sagemaker-runtime CALL (invoke_endpoint, invoke_endpoint_async) with the REQUIRED
    parameters and those of OPTIONAL that were given (None or empty: left out); AWS's refusal
    becomes a DeployError that starts with WHAT."""
    try:
        return call(**required, **{key: value for key, value in optional.items() if value})
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"{what}: {error_message(exc)}") from exc


def invoke(aws: Aws, name: str, body: bytes, content_type: str, accept: str | None = None,
           custom_attributes: str | None = None) -> tuple[bytes, str]:
    checks.check_name(name, "endpoint")
    out = runtime_call(aws.runtime.invoke_endpoint, f"invoke {name}",
                       {"EndpointName": name, "Body": body, "ContentType": content_type},
                       Accept=accept, CustomAttributes=custom_attributes)
    return out["Body"].read(), out.get("ContentType", "")


def softmax_response(body: bytes) -> dict:
    """{"predictions": [[logits...], ...]} -> {"predictions": [[probabilities...]], "classes": [argmax...]}.

    Rows that already are probabilities (non-negative, summing to 1) are left as they are.
    """
    try:
        doc = json.loads(body)
        rows = doc["predictions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError('--softmax needs a JSON response of the form {"predictions": [[...], ...]}') from exc
    if rows and not isinstance(rows[0], list):
        rows = [rows]
    out = []
    for row in rows:
        values = [float(v) for v in row]
        if values and all(v >= 0 for v in values) and abs(sum(values) - 1.0) < 1e-4:
            out.append(values)
            continue
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        total = sum(exps)
        out.append([e / total for e in exps])
    return {"predictions": out, "classes": [max(range(len(r)), key=r.__getitem__) for r in out]}
