"""Request and answer bodies as the command line sees them: the content type a file's extension
implies, and an answer shown as data (--output json/text).

Reason to change: a new body format the commands recognise.
"""

from __future__ import annotations

import base64
import json

CONTENT_TYPES = {".json": "application/json", ".jsonl": "application/jsonlines",
                 ".csv": "text/csv", ".npy": "application/x-npy", ".npz": "application/x-npz"}


def decoded(body: bytes, content_type: str):
    """The answer for --output json/text: parsed JSON, else text, else base64."""
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode()}
