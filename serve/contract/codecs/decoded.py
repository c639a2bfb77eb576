"""What a request body decodes to, and how that request's reply is encoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from serve.contract.errors import BadRequest

Inputs = Union[np.ndarray, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Decoded:
    inputs: Inputs | None          # one unnamed array, or arrays by input name (None for examples)
    signature_name: str | None
    columnar: bool                 # TF Serving's {"inputs": ...}: answer {"outputs": ...}
    examples: list | None = None   # TF Serving's classify/regress {"examples": [...]}
    context: dict | None = None    # ... and its optional "context" features shared by every example

    def reply(self, outputs: Mapping[str, np.ndarray], accept: str, method: str = "predict") -> tuple[bytes, str]:
        """The answer to this request: TF Serving's {"results"} for classify and regress (in any Accept), else
        ACCEPT's encoding ({"outputs"} for a columnar {"inputs"} request, {"predictions"} otherwise)."""
        from serve.contract.codecs import encode, encode_results  # the encoders build on this module; bound at call time
        from serve.contract.codecs.media import JSONLINES

        if method != "predict":  # TF Serving's one JSON document, labelled jsonlines when asked, as AWS's container does
            body, content_type = encode_results(method, outputs)
            return body, JSONLINES if accept == JSONLINES else content_type
        return encode(outputs, accept, columnar=self.columnar)


def text_array(value, what: str) -> np.ndarray:
    """Strings (and {"b64"} bytes) as an object array. NumPy's own str dtype is fixed-width: it would store every
    string at the longest one's width, so one long string among many empty ones would take
    gigabytes from a body of kilobytes."""
    try:
        array = np.array(value, dtype=object)
    except ValueError as exc:  # ragged nesting
        raise BadRequest(f"{what}: every instance must have the same shape ({exc})") from None
    if not all(isinstance(v, (str, bytes)) for v in array.flat):
        raise BadRequest(f"{what}: every instance must have the same shape and hold numbers or strings, "
                         f"not both")
    return array
