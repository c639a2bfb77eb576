"""What the CPU offers, turned into the process layout and TensorFlow/oneDNN settings, before
TensorFlow is imported.

A value the user set always wins; we only fill in what is missing. Two kinds of process
(docs/architecture.md): HTTP workers (gunicorn's gevent worker: one thread, every request of the
worker on it) run Python's per-request work (HTTP, JSON, user handlers) under one GIL each, so
each can use about one core; model processes hold TensorFlow and every model once, read every
worker's requests in one loop and batch them, and give TensorFlow's intra-op pool their share of
the vCPUs. The rule for 1 to 192 vCPUs:

  HTTP workers     = vCPUs up to 4, then 5/8 of the vCPUs (at most 128)
  model processes  = 1 up to 8 vCPUs, then vCPUs / 8
  intra-op threads = vCPUs / model processes; inter-op 2 from 4 intra-op threads, else 1

Measured (docs/performance.md, "The hot path"): at 2 vCPUs, 2 HTTP workers against 1 and 3, by
server CPU per request and req/s at 32 connections (CIFAR CNN and MLP); the model stays in its own
process even there (one TensorFlow, 54 MiB per added worker; the BYOC pattern's TensorFlow in each
worker costs more CPU per request at every level measured). Reasoned from those per-request costs
for larger machines: the HTTP workers took 53% (CIFAR CNN) to 79% (MLP) of a request's server CPU
at 32 connections, so 5/8 of the cores go to them; a model process's loop thread took 0.19 ms (MLP)
to 1.38 ms (CNN, TensorFlow's work on the calling thread included) per request against 0.96 and
1.83 ms in the HTTP workers, so one loop keeps up with 1.3 to 5 HTTP workers: one model process per
8 vCPUs (5 HTTP workers) for models of the MLP's kind, and TensorFlow's intra-op threads spread a
larger model's work over that process's 8 cores. Fewer model processes batch better (every worker's
requests meet in one queue), and each holds the models again (about 320 MiB PSS for the CIFAR CNN).
"""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from serve.contract.settings import Settings


@dataclass(frozen=True)
class Cpu:
    arch: str          # "arm64" or "amd64" (or whatever the machine says)
    vcpus: int         # usable vCPUs: affinity, capped by a cgroup CPU quota
    bf16: bool         # has bf16 matrix units oneDNN can use (arm64 bf16, x86 AMX)


@dataclass(frozen=True)
class Tuning:
    cpu: Cpu
    workers: int             # HTTP workers
    model_processes: int
    intra_op_threads: int    # per model process
    inter_op_threads: int
    onednn: str        # value of TF_ENABLE_ONEDNN_OPTS in effect
    fpmath: str        # value of DNNL_DEFAULT_FPMATH_MODE in effect ("" = oneDNN default, fp32)

    def environment(self) -> dict[str, str]:
        env = {"TF_ENABLE_ONEDNN_OPTS": self.onednn}
        if self.fpmath:
            env["DNNL_DEFAULT_FPMATH_MODE"] = self.fpmath
        return env

    def describe(self) -> str:
        return (f"arch={self.cpu.arch} vcpus={self.cpu.vcpus} bf16_units={self.cpu.bf16} "
                f"workers={self.workers} model_processes={self.model_processes} "
                f"intra_op_threads={self.intra_op_threads} "
                f"inter_op_threads={self.inter_op_threads} TF_ENABLE_ONEDNN_OPTS={self.onednn} "
                f"DNNL_DEFAULT_FPMATH_MODE={self.fpmath or 'unset (fp32)'}")


def _arch() -> str:
    machine = platform.machine().lower()
    return {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64"}.get(machine, machine)


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a CFS quota (cgroup v2 cpu.max or v1 cfs_quota_us), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_vcpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def _has_bf16_units(arch: str, cpuinfo: str) -> bool:
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if arch == "arm64":
        return "bf16" in flags
    return "amx_bf16" in flags  # avx512_bf16 alone has no matrix unit; oneDNN keeps fp32 kernels


AT_HWCAP2 = 26
HWCAP2_BF16 = 1 << 14   # arm64: the BFDOT/BFMMLA instructions (Linux arch/arm64/include/uapi/asm/hwcap.h)


def _arm64_hwcap_bf16() -> bool | None:
    """The kernel's own answer on arm64 (getauxval), or None where it cannot be asked. It is also
    the right answer under qemu-user, where /proc/cpuinfo is the x86 host's but the auxiliary
    vector is the emulated CPU's."""
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        getauxval.argtypes = [ctypes.c_ulong]
        return bool(getauxval(AT_HWCAP2) & HWCAP2_BF16)
    except (OSError, AttributeError):
        return None


def detect_cpu() -> Cpu:
    arch = _arch()
    bf16 = _arm64_hwcap_bf16() if arch == "arm64" else None
    if bf16 is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        bf16 = _has_bf16_units(arch, cpuinfo)
    return Cpu(arch=arch, vcpus=usable_vcpus(), bf16=bf16)


def default_workers(vcpus: int) -> int:
    """HTTP workers; see the module docstring."""
    return vcpus if vcpus <= 4 else min(128, math.ceil(vcpus * 5 / 8))


def default_model_processes(vcpus: int) -> int:
    """Model processes; see the module docstring."""
    return 1 if vcpus <= 8 else vcpus // 8


def plan(settings: Settings, cpu: Cpu) -> Tuning:
    workers = settings.model_server_workers or default_workers(cpu.vcpus)
    processes = settings.tfs_instance_count or default_model_processes(cpu.vcpus)
    share = max(1, cpu.vcpus // processes)
    intra = settings.tfs_intra_op_parallelism or share
    inter = settings.tfs_inter_op_parallelism or (2 if intra >= 4 else 1)
    onednn = settings.tf_enable_onednn_opts or "1"
    if settings.dnnl_default_fpmath_mode is not None:
        fpmath = settings.dnnl_default_fpmath_mode
    else:
        fpmath = "BF16" if cpu.bf16 else ""
    return Tuning(cpu=cpu, workers=workers, model_processes=processes, intra_op_threads=intra,
                  inter_op_threads=inter, onednn=onednn, fpmath=fpmath)


def apply_environment(tuning: Tuning) -> None:
    """Export the oneDNN settings; must run before TensorFlow is imported in any process."""
    os.environ.update(tuning.environment())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # oneDNN's CPU allocator is a BFC pool that, when an allocation fails, retries for 10 s before it
    # gives up, holding the model (every caller) that long for an input that asked for too much
    # memory; the system allocator fails at once (a 413 for that caller) and gives freed memory back
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
