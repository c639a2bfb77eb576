"""Sustained load: 5 minutes at 80% of the capacity measured in the same test.

The host server runs with two workers (the production default of one per vCPU on the 2-vCPU
machine this was written on). `bench.soak.soak` measures capacity with a closed loop, then paces
an open loop at 80% of it; latency is counted from each request's due time, so a stall shows.
The contract: no failed request, p99 within the server's request timeout, and the server's
resident memory (master and workers) grows by less than 5% from the first minute to the last.
Speed itself is never asserted: the machine is shared. Deselect with ``-m "not soak"``.
"""
from __future__ import annotations

import os

import pytest

from bench.soak import soak
from serve.contract.settings import Settings
from tests.fixtures.report import report
from tests.fixtures.server import start_host_server

pytestmark = pytest.mark.soak

MINUTES = 5
FRACTION = 0.8
MAX_RSS_GROWTH = 0.05
BODY = b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}'
SERVER_TIMEOUT_S = float(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT")
                         or Settings.model_fields["model_server_timeout"].default)


@pytest.mark.timeout(600)
def test_soak_five_minutes_at_80_percent_of_capacity(mlp_model_dir):
    with start_host_server(mlp_model_dir.model_dir, env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}) as server:
        result = soak(server.url, server.process.pid, BODY, minutes=MINUTES, fraction=FRACTION,
                      timeout=SERVER_TIMEOUT_S)
        alive = server.alive()
        log_tail = server.logs()[-3000:]

    report("soak", f"MLP, 2 workers: {result.summary()}")
    for m in result.per_minute:
        report("soak", f"  minute {m['minute'] + 1}: {m['requests']} requests ({m['rate']}/s), "
                       f"p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms, max {m['max_ms']} ms, "
                       f"{m['failed']} failed, RSS {m['rss_mib']} MiB, load avg {m['loadavg_1m']}")

    context = f"\n{result.summary()}\n--- server log tail ---\n{log_tail}"
    assert alive, f"the server exited during the soak{context}"
    assert result.failed == 0, f"{result.failed} failed requests: {result.failure_reasons}{context}"
    assert result.p99_ms < SERVER_TIMEOUT_S * 1000, f"p99 {result.p99_ms} ms is not within the timeout{context}"
    assert result.rss_growth < MAX_RSS_GROWTH, (
        f"RSS grew {result.rss_growth:+.2%} from the first minute to the last "
        f"({result.rss_first_mib} -> {result.rss_last_mib} MiB){context}")
