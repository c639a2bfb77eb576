"""The multi-model 507 check (issue 23, point 11): loads in progress hold what they were promised,
and used memory is what the kernel cannot reclaim (page cache is not counted)."""
from __future__ import annotations

import threading

import pytest

from serve.model_process.multimodel import HEADROOM, InsufficientMemory, MemoryBudget, cgroup_memory

GiB = 1 << 30


def test_concurrent_loads_cannot_both_pass_the_check():
    budget = MemoryBudget(lambda: (4 * GiB, 1 * GiB))      # 3.6 GiB may be used: 2.6 GiB left
    inside, release = threading.Event(), threading.Event()
    outcome = {}

    def first():
        with budget.reserve("a", int(1.5 * GiB)):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with pytest.raises(InsufficientMemory) as err:           # 1 + 1.5 promised + 1.5 > 3.6
        with budget.reserve("b", int(1.5 * GiB)):
            outcome["b"] = "loaded"
    assert err.value.status == 507 and "promised to loads in progress" in err.value.message
    release.set()
    thread.join(10)
    assert budget.reserved == 0
    with budget.reserve("b", int(1.5 * GiB)):                # alone it fits
        outcome["b"] = "loaded"
    assert outcome == {"b": "loaded"} and budget.reserved == 0


def test_a_failed_load_gives_its_promise_back():
    budget = MemoryBudget(lambda: (4 * GiB, 0))
    with pytest.raises(RuntimeError):
        with budget.reserve("a", 3 * GiB):
            raise RuntimeError("load failed")
    assert budget.reserved == 0


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_page_cache_is_not_counted_as_used(tmp_path, version):
    # 3 GiB charged to the cgroup, 2.5 GiB of it inactive page cache the kernel would drop first
    if version == "v2":
        (tmp_path / "memory.max").write_text(f"{4 * GiB}\n")
        (tmp_path / "memory.current").write_text(f"{3 * GiB}\n")
        (tmp_path / "memory.stat").write_text(f"anon {GiB // 2}\nfile {int(2.5 * GiB)}\n"
                                              f"active_file 0\ninactive_file {int(2.5 * GiB)}\n")
    else:
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{4 * GiB}\n")
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{3 * GiB}\n")
        (tmp_path / "memory" / "memory.stat").write_text(f"cache {int(2.5 * GiB)}\ninactive_file {int(2.5 * GiB)}\n"
                                                         f"total_inactive_file {int(2.5 * GiB)}\n")
    limit, used = cgroup_memory(tmp_path)
    assert (limit, used) == (4 * GiB, GiB // 2)
    budget = MemoryBudget(lambda: (limit, used))
    with budget.reserve("a", 2 * GiB):                      # 0.5 + 2 < 3.6, though 3 + 2 would not be
        pass
    assert HEADROOM * limit < 3 * GiB + 2 * GiB


def test_no_cgroup_limit_means_the_machines_memory(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text(f"{GiB}\n")
    assert cgroup_memory(tmp_path) is None
