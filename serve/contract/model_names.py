"""Which multi-model names this server takes: every one SageMaker can send, none its routes could
not reach again.

SageMaker's ``model_name`` is opaque (in practice a digest) and is not the ``TargetModel`` of the
request, but a name is only useful if ``POST /models/NAME/invoke`` and ``DELETE /models/NAME``
can address it later, so a name is checked, with a 400, before anything is loaded:
- what botocore's service model allows for ``TargetModel`` (``TargetModelHeader``: 1 to 1,024
  characters, the first not white space, all printable), so any name derived from one fits;
- its ``/`` parts are neither empty, ``.`` nor ``..`` (HTTP clients and the router fold those
  away, so the route would name another model);
- the longest request line that names it, every byte percent-encoded as clients send it, fits
  in the request line gunicorn accepts (``REQUEST_LINE_LIMIT``, as ``serve/server.py`` sets it),
  else every later call would be a 414.
"""
from __future__ import annotations

from urllib.parse import quote

from serve.contract.errors import BadRequest

MAX_NAME_CHARS = 1024        # botocore: sagemaker-runtime TargetModelHeader, max
REQUEST_LINE_LIMIT = 8190    # gunicorn's limit_request_line in serve/server.py
# the longest route a name appears in
_LONGEST_LINE = "DELETE /models/{}/invoke HTTP/1.1"


def check_model_name(name) -> str:
    """NAME if the /models routes can address it; else BadRequest saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise BadRequest('model_name must be a non-empty string', plain=True)
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"model_name has {len(name)} characters; at most {MAX_NAME_CHARS} (as TargetModel)",
                         plain=True)
    if name[0].isspace() or not name.isprintable():
        bad = next((c for c in name if not c.isprintable()), name[0])
        raise BadRequest(f"model_name may not start with white space or hold control characters "
                         f"(found {ascii(bad)})", plain=True)
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadRequest("model_name's '/' parts may not be empty, '.' or '..': no URL could name that model",
                         plain=True)
    line = _LONGEST_LINE.format(quote(name, safe="/"))
    if len(line) > REQUEST_LINE_LIMIT:
        raise BadRequest(f"model_name is {len(line) - len(_LONGEST_LINE) + 2} bytes once percent-encoded in a URL; "
                         f"the request line that names it would pass the server's {REQUEST_LINE_LIMIT}", plain=True)
    return name
