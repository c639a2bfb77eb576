import os

import pytest

from serve.contract import tuning
from serve.contract.settings import load_settings
from serve.contract.tuning import Cpu, plan

GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid " \
            "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm " \
            "ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid " \
            "asimdrdm lrcpc dcpop asimddp ssbs\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize("arch, cpuinfo, expected", [
    ("arm64", GRAVITON3, True), ("arm64", GRAVITON2, False),
    ("amd64", ZEN4, False), ("amd64", SAPPHIRE_RAPIDS, True),
])
def test_bf16_units(arch, cpuinfo, expected):
    assert tuning._has_bf16_units(arch, cpuinfo) is expected


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert tuning._cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert tuning._cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert tuning._cgroup_cpu_limit(tmp_path) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert tuning._cgroup_cpu_limit(tmp_path) is None


def _clean(monkeypatch):
    for name in ("SAGEMAKER_MODEL_SERVER_WORKERS", "TF_ENABLE_ONEDNN_OPTS", "DNNL_DEFAULT_FPMATH_MODE",
                 "SAGEMAKER_TFS_INTRA_OP_PARALLELISM", "SAGEMAKER_TFS_INTER_OP_PARALLELISM",
                 "SAGEMAKER_TFS_INSTANCE_COUNT", "SAGEMAKER_GUNICORN_WORKERS"):
        monkeypatch.delenv(name, raising=False)


# The layout rule of serve/contract/tuning.py, from ml.c7g.medium (1 vCPU) to ml.c8g.48xlarge (192 vCPUs):
# (vCPUs, HTTP workers, model processes, intra-op threads per model process, inter-op threads)
LAYOUT = [(1, 1, 1, 1, 1), (2, 2, 1, 2, 1), (4, 4, 1, 4, 2), (8, 5, 1, 8, 2), (16, 10, 2, 8, 2),
          (32, 20, 4, 8, 2), (64, 40, 8, 8, 2), (192, 120, 24, 8, 2)]


@pytest.mark.parametrize("vcpus, workers, processes, intra, inter", LAYOUT)
def test_layout_rule_for_1_to_192_vcpus(monkeypatch, vcpus, workers, processes, intra, inter):
    _clean(monkeypatch)
    t = plan(load_settings(), Cpu("arm64", vcpus, True))
    assert (t.workers, t.model_processes, t.intra_op_threads, t.inter_op_threads) == (workers, processes, intra, inter)
    assert t.model_processes * t.intra_op_threads == vcpus   # every core is TensorFlow's, once


def test_instance_count_splits_the_vcpus_between_model_processes(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv("SAGEMAKER_TFS_INSTANCE_COUNT", "4")
    t = plan(load_settings(), Cpu("arm64", 16, True))
    assert (t.model_processes, t.intra_op_threads) == (4, 4)


def test_graviton3_gets_onednn_and_bf16(monkeypatch):
    _clean(monkeypatch)
    t = plan(load_settings(), Cpu("arm64", 4, True))
    assert t.environment() == {"TF_ENABLE_ONEDNN_OPTS": "1", "DNNL_DEFAULT_FPMATH_MODE": "BF16"}


def test_no_bf16_units_keeps_fp32(monkeypatch):
    _clean(monkeypatch)
    t = plan(load_settings(), Cpu("arm64", 4, False))
    assert t.environment() == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def test_user_values_win(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("DNNL_DEFAULT_FPMATH_MODE", "STRICT")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    monkeypatch.setenv("SAGEMAKER_TFS_INTRA_OP_PARALLELISM", "5")
    t = plan(load_settings(), Cpu("arm64", 16, True))
    assert (t.workers, t.intra_op_threads, t.onednn, t.fpmath) == (3, 5, "0", "STRICT")


def test_http_workers_do_not_change_tensorflow_threads(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "2")
    t = plan(load_settings(), Cpu("arm64", 8, True))
    assert (t.workers, t.model_processes, t.intra_op_threads, t.inter_op_threads) == (2, 1, 8, 2)


def test_apply_environment_exports_before_tensorflow(monkeypatch):
    _clean(monkeypatch)
    for name in ("TF_ENABLE_ONEDNN_OPTS", "DNNL_DEFAULT_FPMATH_MODE", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.setenv(name, "placeholder")  # so monkeypatch restores them afterwards
        monkeypatch.delenv(name)
    tuning.apply_environment(plan(load_settings(), Cpu("arm64", 4, True)))
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert os.environ["DNNL_DEFAULT_FPMATH_MODE"] == "BF16"


def test_usable_vcpus_respects_affinity():
    assert 1 <= tuning.usable_vcpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("hwcap, cpuinfo, expected", [
    (True, "flags : fpu sse2 avx512_bf16 amx_bf16\n", True),    # qemu-user: the x86 host's cpuinfo, the guest's auxv
    (False, "Features : fp asimd bf16\n", False),               # the kernel's vector wins
    (None, "Features : fp asimd bf16\n", True),                 # no getauxval: /proc/cpuinfo
    (None, "flags : fpu amx_bf16\n", False),
])
def test_arm64_asks_the_auxiliary_vector_first(monkeypatch, tmp_path, hwcap, cpuinfo, expected):
    monkeypatch.setattr(tuning, "_arch", lambda: "arm64")
    monkeypatch.setattr(tuning, "_arm64_hwcap_bf16", lambda: hwcap)
    real_path = tuning.Path
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    monkeypatch.setattr(tuning, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert tuning.detect_cpu().bf16 is expected


def test_getauxval_answers_on_this_machine():
    assert tuning._arm64_hwcap_bf16() in (True, False)   # the call itself works (its bit means BF16 on arm64 only)
