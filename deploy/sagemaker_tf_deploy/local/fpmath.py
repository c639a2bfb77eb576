"""`deploy local --fpmath-check`: the image served twice on this machine, DNNL_DEFAULT_FPMATH_MODE=
BF16 and =STRICT (both at once, through container.py), the same requests to both, compared as
`deploy compare` does (core/comparison.py): the drift BF16 fast math causes.
"""

from __future__ import annotations

import dataclasses
import signal

from ..core import comparison, interrupts
from . import container as local


class _Compared(Exception):
    """Raised from inside the two nested `deploy local` runs once the comparison is done, so both
    containers stop (container.run's own cleanup) and the result comes out."""

    def __init__(self, result: dict):
        super().__init__("compared")
        self.result = result


class _Stopped(Exception):
    """The inner `deploy local` run ended without a comparison (it was interrupted)."""


def fpmath_check(spec, requests_path: str, reporter, download=None, *, warmup: int = 1,
                 max_abs_diff: float | None = None, min_top1: float | None = None) -> dict:
    """Serve SPEC's image and model twice, DNNL_DEFAULT_FPMATH_MODE=BF16 and =STRICT, and compare."""
    reqs = comparison.load_requests(requests_path)
    image_plat = local.image_platform(spec.image, reporter.info)
    arch = image_plat.split("/")[-1] if not spec.platform else spec.platform.split("/")[-1]
    emulated = arch != local.host_arch()
    notes = []
    if arch != "arm64":
        notes.append(f"{spec.image} ran as {arch} on this host's CPU: the drift is this CPU's (oneDNN uses bf16 "
                     "only where the CPU has bf16 instructions), not Graviton's; the arm64 image shows Graviton's")
    if emulated:
        notes.append(f"the {arch} image ran under emulation on this {local.host_arch()} host: the drift is "
                     "the real one (the emulated CPU has bf16), the latencies are not")
    modes = {"BF16": "BF16", "STRICT": "STRICT (fp32)"}

    def spec_for(mode: str):
        return dataclasses.replace(spec, env={**spec.env, "DNNL_DEFAULT_FPMATH_MODE": mode}, port=local.free_port(),
                                   host_ip="127.0.0.1", invoke_file=None, stream_logs=False)

    def bf16_ready(url_bf16: str) -> None:
        reporter.info("BF16 server ready; starting the STRICT (fp32) one")

        def strict_ready(url_strict: str) -> None:
            targets = [comparison.url_target(url_bf16, modes["BF16"]), comparison.url_target(url_strict, modes["STRICT"])]
            reporter.info(f"sending {len(reqs)} requests to both")
            comparison.run(targets, reqs, warmup=warmup, progress=reporter.progress)
            reporter.progress_done()
            raise _Compared(comparison.report(targets, reqs, source=str(requests_path), warmup=warmup,
                                   max_abs_diff=max_abs_diff, min_top1=min_top1, note="; ".join(notes) or None))

        local.run(spec_for("STRICT"), reporter.info, download, on_ready=strict_ready)
        # back here without a result: the STRICT run was stopped (Ctrl-C, SIGTERM); stop the BF16 one too
        raise _Stopped()

    try:
        local.run(spec_for("BF16"), reporter.info, download, on_ready=bf16_ready)
    except _Compared as done:
        result = done.result
        result.update(image=spec.image, platform=f"linux/{arch}", emulated=emulated)
        return result
    except _Stopped:
        pass
    raise interrupts.Interrupted(signal.SIGINT)   # local.run turned the signal into a normal stop
