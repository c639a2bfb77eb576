"""Batching that never changes an answer: at load, each signature that could be batched is called
with a few warm-up rows, each row alone and all of them stacked; a signature whose answer for a
row changes when other rows share its batch (batch statistics, any op across rows) is served
unbatched, so no caller's answer ever depends on, or reveals, another caller's input.

Rows are random (a fixed seed): normal floats, 0/1 integers (safe as indices), random booleans;
unknown inner dimensions are 1. Answers are compared within what floating point allows between a
batch of one and a batch of four (other kernels, other summation orders), BF16 fast math
included: relative 5e-2 of the largest value of that output, which a cross-row op passes only
by accident (its differences are of the order of the values). A signature whose inputs cannot be
made up here (strings, tf.Example) or that refuses the made-up rows stays batched: nothing here
says it mixes rows, and its requests still get their own rows back.
"""
from __future__ import annotations

import logging

import numpy as np

from serve.contract.signature import Signature

log = logging.getLogger("serve.model_process.model")

ROWS = 4
RELATIVE = 5e-2   # of the output's largest magnitude: BF16 keeps 8 bits of mantissa, kernels differ by batch size


def _rows(sig: Signature, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    feed = {}
    for t in sig.inputs.values():
        if t.shape is None or t.dtype == object:
            return None
        shape = (ROWS, *(1 if d is None else d for d in t.shape[1:]))
        if t.dtype.kind == "f":
            feed[t.name] = rng.normal(size=shape).astype(t.dtype)
        elif t.dtype.kind in "iu":
            feed[t.name] = rng.integers(0, 2, size=shape).astype(t.dtype)
        elif t.dtype.kind == "b":
            feed[t.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            return None
    return feed


def _same(alone: np.ndarray, stacked: np.ndarray) -> tuple[bool, float]:
    if alone.shape != stacked.shape:
        return False, float("inf")
    if alone.dtype.kind not in "fc":
        return bool(np.array_equal(alone, stacked)), 0.0
    diff = float(np.max(np.abs(alone.astype(np.float64) - stacked.astype(np.float64)), initial=0.0))
    scale = float(np.max(np.abs(alone.astype(np.float64)), initial=0.0))
    return diff <= RELATIVE * max(scale, 1e-6), diff


def rows_independent(sig: Signature, seed: int = 0) -> tuple[bool | None, str]:
    """(True, "") if each row's answer is the same alone and stacked; (False, why) if not;
    (None, why) if it could not be tried."""
    feed = _rows(sig, np.random.default_rng(seed))
    if feed is None:
        return None, "its inputs cannot be made up (strings or unknown shapes)"
    try:
        stacked = sig.call(feed)
        alone = [sig.call({k: v[i:i + 1] for k, v in feed.items()}) for i in range(ROWS)]
    except Exception as exc:  # a model that refuses random rows; zeros were its warm-up
        return None, f"it refused made-up rows ({type(exc).__name__})"
    for name, out in stacked.items():
        out = np.asarray(out)
        if out.ndim == 0 or out.shape[0] != ROWS:
            return False, f"output '{name}' is not one row per input row"
        for i in range(ROWS):
            same, diff = _same(np.asarray(alone[i][name]), out[i:i + 1])
            if not same:
                return False, (f"output '{name}' for a row changes by {diff:.3g} when other rows share its batch "
                               f"(an op across rows, such as batch statistics)")
    return True, ""


def unbatched_signatures(model, enabled: bool) -> set[str]:
    """The names of MODEL's signatures that must be called one request at a time."""
    if not enabled:
        log.info("%s version %s: batching off (SAGEMAKER_TFS_ENABLE_BATCHING=false)", model.name,
                 model.version or "-")
        return set(model.signatures)
    unbatched = set()
    for name, sig in model.signatures.items():
        if not sig.batched or sig.method != "predict":
            continue
        independent, why = rows_independent(sig)
        if independent is False:
            unbatched.add(name)
            log.warning("%s version %s signature %s: served unbatched, one request per call: %s", model.name,
                        model.version or "-", name, why)
        elif independent is None:
            log.info("%s version %s signature %s: batched without a check: %s", model.name, model.version or "-",
                     name, why)
    return unbatched
