"""The model process's connection loop in-process: a request that cannot be allocated is a 413
reply and the connection goes on serving (serve/model_process/main.py, Server._connection)."""
from __future__ import annotations

import threading
from multiprocessing import Pipe

import numpy as np

from serve.model_process.main import ModelService, Server


def test_a_memory_error_answers_413_and_the_connection_goes_on(tmp_path):
    server = Server(ModelService(None, "default", None), tmp_path / "model.sock", timeout=5)
    calls = []

    def dispatch(op, request, attached, answer):
        calls.append(op)
        if op == "huge":
            np.empty(2 ** 62, np.uint8)
        return ("ok", op), answer

    server._dispatch = dispatch
    ours, theirs = Pipe()
    thread = threading.Thread(target=server._connection, args=(theirs,), daemon=True)
    thread.start()
    try:
        ours.send(("huge", {}))
        reply = ours.recv()
        assert reply[:2] == ("error", 413) and "more memory than this server can allocate" in reply[2], reply
        ours.send(("describe", {}))
        assert ours.recv() == ("ok", "describe")
        assert calls == ["huge", "describe"]
    finally:
        ours.close()
        thread.join(5)
        server.listener.close()
    assert not thread.is_alive()
