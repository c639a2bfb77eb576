"""The model process's loop in-process: a request that cannot be allocated is a 413 reply and the
connection goes on serving (serve/model_process/main.py, Server)."""
from __future__ import annotations

import socket
import threading

import numpy as np

from serve.contract import channel
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(10)
    ours.connect(str(tmp_path / "model.sock"))
    try:
        channel.send(ours, ("huge", {}))
        reply = channel.receive(ours)
        assert reply[:2] == ("error", 413) and "more memory than this server can allocate" in reply[2], reply
        channel.send(ours, ("describe", {}))
        assert channel.receive(ours) == ("ok", "describe")
        assert calls == ["huge", "describe"]
    finally:
        ours.close()
        server.listener.close()


def test_inference_on_a_server_without_a_default_model_is_a_400_and_the_loop_goes_on(tmp_path):
    server = Server(ModelService(None, "toolkit", None), tmp_path / "model.sock", timeout=5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(10)
    ours.connect(str(tmp_path / "model.sock"))
    try:
        for _ in range(2):
            channel.send(ours, ("infer", {"model": None, "version": None, "signature": "serving_default"}))
            reply = channel.receive(ours)
            assert reply[:2] == ("error", 400) and "model_fn" in reply[2], reply
    finally:
        ours.close()
        server.listener.close()
