"""What `deploy compare` and `deploy local --fpmath-check` share: the same requests to two (or more)
targets, latency side by side and how far their answers agree.

Targets are servers by URL here (POST URL/invocations, such as two `deploy local` containers) or
endpoint variants (operations/compare.py). Requests come from a JSON Lines file (one JSON body per line), a
folder of files (content type from each extension), or a single file.

Each request goes to every target in turn (the order rotates from request to request so neither
target always goes first); a warm-up request per target is not counted. Reported:
  * per target: answered, errors, p50 / p99 / mean latency (client-side, milliseconds);
  * per pair (each target against the first) and per output: values compared, max absolute and
    max relative difference, and for outputs whose last axis has 2 or more entries (classifier
    scores) the share of rows whose top-1 index agrees.
Answers are read as JSON (TF Serving's {"predictions": ...} or {"outputs": ...}, the row format
with named outputs, or any numeric array), .npy / .npz or CSV; anything else is compared byte for
byte. The relative difference is |a - b| / max(|a|, |b|) over the values where max(|a|, |b|) >=
1e-6 (tiny values would make it meaningless).

`--fpmath-check` (local/fpmath.py) runs the image twice (DNNL_DEFAULT_FPMATH_MODE=BF16, then
=STRICT, both serving at once) and compares them the same way: the drift BF16 fast math causes.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import itertools
import json
import math
import struct
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import bodies
from .errors import UsageError

REL_FLOOR = 1e-6


@dataclass
class Request:
    name: str
    body: bytes
    content_type: str


@dataclass
class Answer:
    ok: bool
    body: bytes = b""
    content_type: str = ""
    error: str = ""
    seconds: float = 0.0


@dataclass
class Target:
    label: str
    send: Callable[[Request], Answer]
    answers: list[Answer] = field(default_factory=list)


# --- requests ----------------------------------------------------------------------------------

def load_requests(path: str | Path) -> list[Request]:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--requests {path}: no such file or folder")
    types = bodies.CONTENT_TYPES
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        out = [Request(f.name, f.read_bytes(), types.get(f.suffix.lower(), "application/octet-stream"))
               for f in files]
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as exc:
                raise UsageError(f"--requests {path}: line {n} is not JSON ({exc})") from None
            out.append(Request(f"line {n}", line.encode(), "application/json"))
    else:
        out = [Request(p.name, p.read_bytes(), types.get(p.suffix.lower(), "application/octet-stream"))]
    if not out:
        raise UsageError(f"--requests {path} holds no requests")
    return out


# --- targets -----------------------------------------------------------------------------------

def url_target(url: str, label: str | None = None, timeout: float = 120.0) -> Target:
    import requests

    base = url.rstrip("/")
    post_to = base if base.endswith("/invocations") else f"{base}/invocations"
    session = requests.Session()

    def send(req: Request) -> Answer:
        start = time.perf_counter()
        try:
            resp = session.post(post_to, data=req.body, headers={"Content-Type": req.content_type},
                                timeout=timeout)
        except requests.RequestException as exc:
            return Answer(False, error=f"{type(exc).__name__}", seconds=time.perf_counter() - start)
        took = time.perf_counter() - start
        ctype = resp.headers.get("Content-Type", "")
        if not 200 <= resp.status_code < 300:
            return Answer(False, resp.content, ctype, f"HTTP {resp.status_code}: {resp.text[:200]}", took)
        return Answer(True, resp.content, ctype, seconds=took)

    return Target(label or base, send)


# --- answers -----------------------------------------------------------------------------------

@dataclass
class Values:
    """A decoded numeric output: its shape and its values in row-major order (floats). The
    standard-library stand-in for a float64 array, which is all the comparison needs."""

    shape: tuple[int, ...]
    flat: list[float]

    @property
    def size(self) -> int:
        return len(self.flat)


def _values(value) -> Values:
    """Nested lists of numbers as Values, as a float64 array would read them: None is NaN, a
    ragged or non-numeric list raises ValueError or TypeError."""
    if isinstance(value, (list, tuple)):
        parts = [_values(v) for v in value]
        inner = parts[0].shape if parts else ()
        if any(p.shape != inner for p in parts):
            raise ValueError("ragged nested list")
        return Values((len(parts), *inner), [x for p in parts for x in p.flat])
    if value is None:
        return Values((), [math.nan])
    if isinstance(value, (dict, bytes)):
        raise TypeError(f"not a number: {type(value).__name__}")
    return Values((), [float(value)])


def _arrays(value) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update({f"{k}.{kk}" if kk != "" else k: vv for kk, vv in _arrays(v).items()})
        return out
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):   # row format
        keys = list(value[0])
        return {k: a for k in keys for a in [_numeric([r.get(k) for r in value])] if a is not None}
    arr = _numeric(value)
    return {"": arr} if arr is not None else {}


def _numeric(value) -> Values | None:
    try:
        return _values(value)
    except (ValueError, TypeError, OverflowError):
        return None


_NPY_MAGIC = b"\x93NUMPY"
_NPY_CODES = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
              "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}


def _npy(body: bytes) -> Values:
    """One .npy array (format versions 1 to 3, numeric dtypes, C or Fortran order) as Values."""
    if not body.startswith(_NPY_MAGIC) or len(body) < 10:
        raise ValueError("not an .npy array")
    major = body[6]
    size_format, start = ("<H", 10) if major == 1 else ("<I", 12)
    (header_len,) = struct.unpack_from(size_format, body, 8)
    header = ast.literal_eval(body[start:start + header_len].decode("utf-8" if major >= 3 else "latin-1"))
    descr, shape = header["descr"], tuple(header["shape"])
    code = _NPY_CODES.get(descr[1:]) if isinstance(descr, str) else None
    if code is None:
        raise ValueError(f"unsupported .npy dtype {descr!r}")
    order = {"<": "<", ">": ">", "|": "<", "=": "="}[descr[0]]
    count = math.prod(shape)
    data = body[start + header_len:]
    need = count * struct.calcsize(code)
    if len(data) < need:
        raise ValueError("truncated .npy array")
    flat = [float(x) for x in struct.unpack_from(f"{order}{count}{code}", data)]
    if header.get("fortran_order") and len(shape) > 1:
        strides = [math.prod(shape[:i]) for i in range(len(shape))]   # first axis fastest
        flat = [flat[sum(i * s for i, s in zip(index, strides))]
                for index in itertools.product(*(range(n) for n in shape))]
    return Values(shape, flat)


def _npz(body: bytes) -> dict:
    if not body.startswith(b"PK\x03\x04"):
        raise ValueError("not an .npz archive")
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            return {name.removesuffix(".npy"): _npy(z.read(name)) for name in z.namelist()}
    except zipfile.BadZipFile as exc:
        raise ValueError(str(exc)) from exc


def _csv(text: str) -> Values:
    """Comma-separated numbers as numpy.loadtxt(delimiter=",", ndmin=1) reads them: comments and
    blank lines skipped, axes of length 1 squeezed, at least one axis."""
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append([float(v) for v in line.split(",")])
    if not rows:
        return Values((0,), [])
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise ValueError("CSV rows of different lengths")
    shape = tuple(n for n in (len(rows), width) if n != 1) or (1,)
    return Values(shape, [x for r in rows for x in r])


def decode(body: bytes, content_type: str) -> dict | None:
    """Named Values of an answer, or None when it is not numeric (then compared as bytes)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        if ctype in ("application/x-npy",):
            return {"output": _npy(body)}
        if ctype in ("application/x-npz",):
            return _npz(body)
        if ctype == "text/csv":
            return {"output": _csv(body.decode())}
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, OSError, KeyError, SyntaxError, struct.error):
        return None
    if isinstance(doc, dict):
        for key in ("predictions", "outputs"):
            if key in doc:
                named = _arrays(doc[key])
                return {(k or key): v for k, v in named.items()} or None
    named = _arrays(doc)
    return {(k or "output"): v for k, v in named.items()} or None


# --- comparing ---------------------------------------------------------------------------------

def _max(values: list[float]) -> float:
    """The largest value; NaN when any is NaN (as an array's max())."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _argmax(row: list[float]) -> int:
    """Index of the first largest value, or of the first NaN (as an array's argmax())."""
    for i, v in enumerate(row):
        if math.isnan(v):
            return i
    return max(range(len(row)), key=row.__getitem__)


@dataclass
class OutputAgreement:
    name: str
    compared: int = 0            # values compared
    requests: int = 0            # requests whose output was compared
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    top1_rows: int = 0
    top1_agree: int = 0
    shape_mismatches: int = 0
    missing: int = 0

    def add(self, a: Values, b: Values) -> None:
        if a.shape != b.shape:
            self.shape_mismatches += 1
            return
        self.requests += 1
        if a.size == 0:
            return
        pairs = list(zip(a.flat, b.flat))
        diff = [abs(x - y) for x, y in pairs]
        if not all(math.isfinite(d) for d in diff):
            # as before: once anything is not finite, equal values (NaN with NaN included) count
            # 0 and every other difference counts infinite
            diff = [0.0 if x == y or (math.isnan(x) and math.isnan(y)) else math.inf for x, y in pairs]
        self.compared += a.size
        self.max_abs_diff = max(self.max_abs_diff, max(diff))
        denom = [math.nan if math.isnan(x) or math.isnan(y) else max(abs(x), abs(y)) for x, y in pairs]
        rel = [d / n for d, n in zip(diff, denom) if n >= REL_FLOOR]
        if rel:
            self.max_rel_diff = max(self.max_rel_diff, _max(rel))
        width = a.shape[-1] if a.shape else 0
        if width >= 2:
            rows = range(0, a.size, width)
            self.top1_rows += len(rows)
            self.top1_agree += sum(_argmax(a.flat[i:i + width]) == _argmax(b.flat[i:i + width]) for i in rows)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["top1_agreement"] = (self.top1_agree / self.top1_rows) if self.top1_rows else None
        return d


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def run(targets: list[Target], reqs: list[Request], *, warmup: int = 1,
        progress: Callable[[str, str, float], None] | None = None) -> None:
    """Send every request to every target (rotating who goes first); answers land on the targets."""
    for t in targets:
        for _ in range(warmup):
            t.send(reqs[0])
    start = time.monotonic()
    for i, req in enumerate(reqs):
        order = targets[i % len(targets):] + targets[:i % len(targets)]
        for t in order:
            t.answers.append(t.send(req))
        step = max(1, len(reqs) // 10)
        if progress and ((i + 1) % step == 0 or i + 1 == len(reqs)):
            progress("compare", f"{i + 1}/{len(reqs)} requests", time.monotonic() - start)


def report(targets: list[Target], reqs: list[Request], *, source: str = "", warmup: int = 1,
           max_abs_diff: float | None = None, min_top1: float | None = None, note: str | None = None) -> dict:
    rows = []
    for t in targets:
        ok = [a.seconds * 1000 for a in t.answers if a.ok]
        errors = [(r.name, a.error) for r, a in zip(reqs, t.answers) if not a.ok]
        rows.append({"target": t.label, "ok": len(ok), "errors": len(errors),
                     "p50_ms": _percentile(ok, 0.50), "p99_ms": _percentile(ok, 0.99),
                     "mean_ms": (sum(ok) / len(ok)) if ok else None,
                     "first_errors": [f"{n}: {e}" for n, e in errors[:3]]})
    pairs = []
    ref = targets[0]
    for other in targets[1:]:
        outputs: dict[str, OutputAgreement] = {}
        bytes_same = bytes_diff = one_sided = 0
        for a, b in zip(ref.answers, other.answers):
            if a.ok != b.ok:
                one_sided += 1
                continue
            if not a.ok:
                continue
            da, db = decode(a.body, a.content_type), decode(b.body, b.content_type)
            if da is None or db is None:
                if a.body == b.body:
                    bytes_same += 1
                else:
                    bytes_diff += 1
                continue
            for name in sorted(set(da) | set(db)):
                agg = outputs.setdefault(name, OutputAgreement(name))
                if name not in da or name not in db:
                    agg.missing += 1
                else:
                    agg.add(da[name], db[name])
        pairs.append({"reference": ref.label, "target": other.label,
                      "outputs": [o.as_dict() for o in outputs.values()],
                      "failed_on_one_side": one_sided, "non_numeric_same": bytes_same,
                      "non_numeric_different": bytes_diff})
    checks = []
    for pair in pairs:
        vs = f"{pair['target']} vs {pair['reference']}"
        if max_abs_diff is not None:
            if not pair["outputs"]:
                checks.append({"check": f"max abs diff <= {max_abs_diff:g}", "on": vs, "value": None, "ok": False})
            for o in pair["outputs"]:
                ok = o["requests"] > 0 and o["max_abs_diff"] <= max_abs_diff and not o["shape_mismatches"] \
                    and not o["missing"]
                checks.append({"check": f"max abs diff <= {max_abs_diff:g}", "on": f"{o['name']}, {vs}",
                               "value": o["max_abs_diff"], "ok": ok})
        if min_top1 is not None:
            classified = [o for o in pair["outputs"] if o["top1_agreement"] is not None]
            if not classified:
                checks.append({"check": f"top-1 agreement >= {min_top1:.2%}", "on": vs, "value": None, "ok": False,
                               "why": "no output with a class axis (last axis of 2 or more)"})
            for o in classified:
                checks.append({"check": f"top-1 agreement >= {min_top1:.2%}", "on": f"{o['name']}, {vs}",
                               "value": o["top1_agreement"], "ok": o["top1_agreement"] >= min_top1})
        if (max_abs_diff is not None or min_top1 is not None):
            checks.append({"check": "no request fails on one target only", "on": vs,
                           "value": pair["failed_on_one_side"], "ok": pair["failed_on_one_side"] == 0})
    answered = all(r["ok"] > 0 for r in rows)
    if not answered:
        checks.append({"check": "every target answered at least one request", "on": "all", "value": None,
                       "ok": False})
    return {"requests": len(reqs), "source": source, "warmup": warmup, "targets": rows, "agreement": pairs,
            "checks": checks, "ok": all(c["ok"] for c in checks), "note": note}


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _g(v) -> str:
    return "-" if v is None else f"{v:.2e}"


def table(r: dict) -> list[str]:
    lines = [f"requests  {r['requests']} from {r['source']} (each to every target; {r['warmup']} warm-up "
             "request per target not counted)", ""]
    width = max([len("TARGET")] + [len(t["target"]) for t in r["targets"]])
    lines.append(f"{'TARGET'.ljust(width)}  {'OK':>5} {'ERRORS':>6} {'P50 MS':>8} {'P99 MS':>8} {'MEAN MS':>8}")
    for t in r["targets"]:
        lines.append(f"{t['target'].ljust(width)}  {t['ok']:>5} {t['errors']:>6} {_ms(t['p50_ms']):>8} "
                     f"{_ms(t['p99_ms']):>8} {_ms(t['mean_ms']):>8}")
        for e in t["first_errors"]:
            lines.append(f"{''.ljust(width)}  error: {e}")
    for pair in r["agreement"]:
        lines += ["", f"agreement {pair['target']} vs {pair['reference']}"]
        if pair["outputs"]:
            w = max([len("OUTPUT")] + [len(o["name"]) for o in pair["outputs"]])
            lines.append(f"  {'OUTPUT'.ljust(w)}  {'VALUES':>7} {'MAX ABS DIFF':>12} {'MAX REL DIFF':>12}  TOP-1 AGREEMENT")
            for o in pair["outputs"]:
                top1 = (f"{o['top1_agreement']:.1%} ({o['top1_agree']}/{o['top1_rows']} rows)"
                        if o["top1_agreement"] is not None else "-")
                lines.append(f"  {o['name'].ljust(w)}  {o['compared']:>7} {_g(o['max_abs_diff']):>12} "
                             f"{_g(o['max_rel_diff']):>12}  {top1}")
                if o["shape_mismatches"] or o["missing"]:
                    lines.append(f"  {''.ljust(w)}  shapes differ in {o['shape_mismatches']} answers, "
                                 f"missing in {o['missing']}")
        if pair["failed_on_one_side"]:
            lines.append(f"  {pair['failed_on_one_side']} requests failed on one target only")
        if pair["non_numeric_same"] or pair["non_numeric_different"]:
            lines.append(f"  non-numeric answers: {pair['non_numeric_same']} identical, "
                         f"{pair['non_numeric_different']} different")
    if r["checks"]:
        lines += ["", "checks"]
        for c in r["checks"]:
            value = c["value"]
            shown = "-" if value is None else (f"{value:.2e}" if isinstance(value, float) and "abs" in c["check"]
                                               else f"{value:.2%}" if isinstance(value, float) else str(value))
            lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {shown} ({c['on']})"
                         + (f" - {c['why']}" if c.get("why") else ""))
    if r.get("note"):
        lines += ["", f"note: {r['note']}"]
    return lines
