"""Media types: the names a request or an Accept header may use, folded to the ones we handle,
and which answer an Accept header gets."""
from __future__ import annotations

from serve.contract.errors import NotAcceptable

JSON = "application/json"

JSONLINES = "application/jsonlines"

CSV = "text/csv"

NPY = "application/x-npy"

NPZ = "application/x-npz"

_ALIASES = {
    "application/json": JSON, "application/x-json": JSON,
    "application/jsonlines": JSONLINES, "application/jsonl": JSONLINES, "application/jsons": JSONLINES,
    "application/x-jsonlines": JSONLINES, "application/x-ndjson": JSONLINES,
    "text/csv": CSV, "application/csv": CSV,
    "application/x-npy": NPY, "application/npy": NPY,
    "application/x-npz": NPZ, "application/npz": NPZ,
}
DECODABLE = (JSON, JSONLINES, CSV, NPY, NPZ)

ENCODABLE = (JSON, JSONLINES, CSV, NPY, NPZ)


def media_type(header: str | None, default: str = JSON) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json', with known aliases folded."""
    if not header:
        return default
    base = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


_WILDCARDS = {"*/*": JSON, "application/*": JSON, "text/*": CSV}

# In Accept, AWS's container answers JSON Lines only to application/jsonlines; the other names a
# request body may use for it (application/jsons, ...) get TF Serving's JSON, labelled application/json.
_ACCEPT_ALIASES = {**_ALIASES, **{name: JSON for name, kind in _ALIASES.items()
                                  if kind == JSONLINES and name != JSONLINES}}


def negotiate(accept_header: str | None) -> str:
    """The response media type for an Accept header; JSON when it is missing or */*.

    Highest quality first; among equals, the first one the client listed (AWS's TensorFlow
    container labels its answer with the first listed type). Parameters such as charset are
    ignored: every text answer is UTF-8.
    """
    if not accept_header or not accept_header.strip():
        return JSON
    offers = []
    for position, item in enumerate(accept_header.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            offers.append((-quality, position, media.lower()))
    for negative_quality, _, media in sorted(offers):
        if negative_quality >= 0:
            break
        known = _ACCEPT_ALIASES.get(media) or _WILDCARDS.get(media)
        if known:
            return known
    raise NotAcceptable(f"cannot answer with Accept: {accept_header}; supported: {', '.join(ENCODABLE)}")
