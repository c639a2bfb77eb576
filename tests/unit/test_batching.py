"""The adaptive batcher: same answers as unbatched calls, each to its caller. The model is
tests/unit/stubs.py's NumPy stand-in for multi_io_model_dir (the real SavedModel is batched
through the model process in tests/host/test_modelproc.py). Here a loop of its own on a thread
runs the batches (``Scheduler.run_in_thread``), as the model process's loop does."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve.model_process.batching import Batcher, Scheduler
from tests.unit import stubs


class Recorder:
    """The signature call, noting the shape of every batch it was given."""

    def __init__(self, model, delay=0.0):
        self.model = model
        self.delay = delay
        self.calls = []
        self.threads = []
        self.lock = threading.Lock()

    def __call__(self, signature, feed):
        with self.lock:
            self.calls.append((signature, {k: v.shape for k, v in feed.items()}))
            self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)  # a slow model, so that requests pile up behind it
        return self.model.signatures[signature].call(feed)


@pytest.fixture(scope="module")
def model():
    return stubs.multi_io()


def make(model, delay=0.0, max_batch=32):
    rec = Recorder(model, delay)
    runner = Scheduler()
    runner.run_in_thread()
    return rec, Batcher(rec, max_batch, batchable=lambda s: model.signatures[s].batched, runner=runner)


def submit_all(batcher, requests, timeout=30):
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(lambda r: batcher.wait(batcher.submit(*r), timeout), r) for r in requests]
        return [f.exception() or f.result() for f in futures]


def test_lone_request_runs_at_once(model):
    rec, batcher = make(model)
    start = time.perf_counter()
    out = batcher.wait(batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)}), 10)
    assert time.perf_counter() - start < 0.5  # nothing waits for requests that may come
    np.testing.assert_array_equal(out["s"], [3.0])
    assert rec.threads == ["batcher"]  # the loop ran it


def test_what_arrived_during_a_call_is_the_next_batch(model):
    rec, batcher = make(model, delay=0.2)
    first = batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)})
    time.sleep(0.05)                   # the first call is running
    rest = [batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)}) for _ in range(5)]
    for f in [first, *rest]:
        batcher.wait(f, 10)
    assert [shape["x"][0] for _, shape in rec.calls] == [1, 5]


def test_concurrent_requests_are_stacked_and_split_back(model):
    rec, batcher = make(model, delay=0.05)
    rng = np.random.default_rng(1)
    xs = [rng.random((1 + i % 3, 3), dtype=np.float32) for i in range(24)]
    results = submit_all(batcher, [("sum_only", {"x": x}) for x in xs])
    for x, out in zip(xs, results):
        unbatched = model.signatures["sum_only"].call({"x": x})
        np.testing.assert_allclose(out["s"], unbatched["s"], rtol=1e-6)
    assert len(rec.calls) < len(xs), "nothing was batched"
    assert max(shape["x"][0] for _, shape in rec.calls) > 3


def test_max_batch_size_is_respected(model):
    rec, batcher = make(model, delay=0.05, max_batch=4)
    submit_all(batcher, [("sum_only", {"x": np.ones((1, 3), np.float32)}) for _ in range(16)])
    assert all(shape["x"][0] <= 4 for _, shape in rec.calls)


def test_shapes_and_signatures_are_never_mixed(model):
    rec, batcher = make(model, delay=0.05)
    reqs = []
    for i in range(18):
        width = 2 + i % 3
        reqs.append(("any_width", {"x": np.full((1, width), i, np.float32)}))
    reqs += [("sum_only", {"x": np.full((1, 3), 100 + i, np.float32)}) for i in range(6)]
    results = submit_all(batcher, reqs)
    for (sig, feed), out in zip(reqs, results):
        np.testing.assert_allclose(out["s"], feed["x"].sum(axis=1))
    assert len(rec.calls) < len(reqs), "nothing was batched"
    assert batcher.stats["fallbacks"] == 0, "requests of different shapes were put in one batch"


def test_one_bad_request_fails_alone(model):
    rec, batcher = make(model, delay=0.05)
    xs = [np.full((1, 3), i, np.float32) for i in range(12)]
    xs[5] = np.array([[1.0, np.nan, 2.0]], np.float32)
    results = submit_all(batcher, [("checked", {"x": x}) for x in xs])
    for i, (x, out) in enumerate(zip(xs, results)):
        if i == 5:
            assert isinstance(out, Exception) and "NaN" in str(out)
        else:
            np.testing.assert_allclose(out["s"], x.sum(axis=1))
    assert any(shape["x"][0] > 1 for _, shape in rec.calls), "the bad request was never in a batch"


def test_batching_off_means_one_request_per_call(model):
    rec, batcher = make(model, delay=0.02, max_batch=1)
    submit_all(batcher, [("sum_only", {"x": np.ones((1, 3), np.float32)}) for _ in range(8)])
    assert len(rec.calls) == 8


def test_timeout_answers_504(model):
    from serve.contract.errors import RequestTimeout

    rec, batcher = make(model, delay=1.0)
    busy = threading.Thread(target=lambda: batcher.wait(
        batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)}), 10))
    busy.start()  # occupies the model, so the next request has to queue
    time.sleep(0.1)
    with pytest.raises(RequestTimeout) as err:
        batcher.wait(batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)}), 0.2)
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in err.value.message
    busy.join()


# --- a batch transform mini-batch: thousands of records in one request ----------------------------

def test_large_request_is_split_into_calls_no_larger_than_the_maximum(model):
    rec, batcher = make(model, max_batch=32)
    x = np.random.default_rng(2).random((3000, 3), dtype=np.float32)
    out = batcher.wait(batcher.submit("sum_only", {"x": x}), 60)
    sizes = [shape["x"][0] for _, shape in rec.calls]
    assert max(sizes) <= 32 and sum(sizes) == 3000, sizes
    assert len(sizes) == 94                     # 93 full parts and one of 24
    np.testing.assert_allclose(out["s"], x.sum(axis=1), rtol=1e-6)   # in order, row for row
    assert batcher.stats["split"] == 1


def test_parts_of_a_large_request_leave_room_for_others(model):
    rec, batcher = make(model, delay=0.02, max_batch=32)
    big = np.ones((32 * 15, 3), np.float32)     # 15 calls of 20 ms
    whole = batcher.submit("sum_only", {"x": big})
    time.sleep(0.05)
    start = time.monotonic()
    small = batcher.wait(batcher.submit("sum_only", {"x": np.full((1, 3), 2, np.float32)}), 10)
    small_took = time.monotonic() - start
    np.testing.assert_allclose(small["s"], [6.0])
    assert not whole.done() or small_took < 0.1, "the small request waited for the whole large one"
    np.testing.assert_allclose(batcher.wait(whole, 30)["s"], np.full(480, 3.0))
    assert all(shape["x"][0] <= 32 for _, shape in rec.calls)


def test_a_large_request_with_batching_off_runs_whole(model):
    rec, batcher = make(model, max_batch=1)
    out = batcher.wait(batcher.submit("sum_only", {"x": np.ones((500, 3), np.float32)}), 30)
    assert [shape["x"][0] for _, shape in rec.calls] == [500]
    assert len(out["s"]) == 500


def test_a_bad_record_fails_its_whole_request_and_nothing_else(model):
    rec, batcher = make(model, max_batch=16)
    x = np.ones((100, 3), np.float32)
    x[70, 1] = np.nan
    with pytest.raises(Exception, match="NaN"):
        batcher.wait(batcher.submit("checked", {"x": x}), 30)
    ok = batcher.wait(batcher.submit("checked", {"x": np.ones((40, 3), np.float32)}), 30)
    np.testing.assert_allclose(ok["s"], np.full(40, 3.0))


def test_a_timed_out_large_request_stops_calling_the_model(model):
    from serve.contract.errors import RequestTimeout

    rec, batcher = make(model, delay=0.05, max_batch=8)
    with pytest.raises(RequestTimeout):
        batcher.wait(batcher.submit("sum_only", {"x": np.ones((8 * 40, 3), np.float32)}), 0.2)
    time.sleep(0.3)
    calls = len(rec.calls)
    time.sleep(0.3)
    assert len(rec.calls) == calls < 40, "parts of a cancelled request kept running"


def test_the_model_thread_keeps_no_finished_batch(model):
    """A finished batch's arrays (a view of the request's shared-memory segment, in the model
    process) are not held while the model thread waits for the next one."""
    import gc
    import weakref

    rec, batcher = make(model, delay=0.2)
    first = threading.Thread(target=lambda: batcher.wait(batcher.submit("sum_only", {"x": np.ones((1, 3), np.float32)}), 10))
    first.start()
    time.sleep(0.05)                       # the first is running; the second queues behind it
    x = np.ones((1, 3), np.float32)
    gone = weakref.ref(x)
    out = batcher.wait(batcher.submit("sum_only", {"x": x}), 10)
    first.join()
    assert rec.threads[-1] == "batcher"    # the premise: it ran on the loop's thread
    del x
    time.sleep(0.05)
    gc.collect()
    assert gone() is None, "the model thread still holds the last batch's inputs"
    np.testing.assert_array_equal(out["s"], [3.0])
