"""How to start each stack against one model. Each returns (server, invocation path, body kind)."""
from __future__ import annotations

import json
import os

from .harness import (PEERS, REPO, TMP, ContainerServer, HostServer, ensure_venv, free_port)

# label, short description (README table)
LABELS = {
    "tf": "TensorFlow in-process (no HTTP)",
    "byoc": "Flask + gunicorn sync (SageMaker BYOC pattern)",
    "byoc-same": "Flask + gunicorn sync (SageMaker BYOC pattern)",
    "mms": "sagemaker-inference 1.10.1 + MMS 1.1.11",
    "mlserver": "MLServer 1.7.1, adaptive batching (32, 5 ms)",
    "ours": "this project, host (`serve`)",
    "ours-container": "this project, amd64 container",
}
PEER_STACKS = ("byoc", "byoc-same", "mms", "mlserver")
HTTP_STACKS = PEER_STACKS + ("ours", "ours-container")


def _quiet_tf():
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def ours_default_workers(ours_env: dict) -> int:
    """The worker count this project's server will pick here (its own rule), for like-for-like peers."""
    if ours_env.get("SAGEMAKER_MODEL_SERVER_WORKERS"):
        return int(ours_env["SAGEMAKER_MODEL_SERVER_WORKERS"])
    try:
        from serve.contract.tuning import default_workers, usable_vcpus
        return default_workers(usable_vcpus())
    except Exception:
        return os.cpu_count() or 1


def start_byoc(model, base, workers, tag="byoc"):
    venv = ensure_venv("byoc", PEERS / "byoc" / "requirements.txt")
    port = free_port()
    cmd = [venv / "bin" / "gunicorn", "-k", "sync", "-w", str(workers), "--timeout", "60",
           "-b", f"127.0.0.1:{port}", "app:app"]
    env = {**_quiet_tf(), "MODEL_DIR": str(base / "model" / "1")}
    return HostServer(f"{tag}-{model}", cmd, env=env, cwd=PEERS / "byoc", port=port), "/invocations", "json"


def start_mms(model, base, workers):
    venv = ensure_venv("mms", PEERS / "mms" / "requirements.txt")
    port = free_port(below=32000)
    tmp = TMP / "mms" / model
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**_quiet_tf(),
           "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port),
           "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
           "MMS_CONFIG_FILE": str(tmp / "sagemaker-mms.properties"),
           "TMPDIR": str(tmp), "TEMP": str(tmp),
           "PYTHONPATH": str(PEERS / "mms"),
           "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    cmd = [venv / "bin" / "python", PEERS / "mms" / "start.py"]
    return HostServer(f"mms-{model}", cmd, env=env, cwd=tmp, port=port), "/invocations", "json"


def start_mlserver(model, base, workers):
    venv = ensure_venv("mlserver", PEERS / "mlserver" / "requirements.txt")
    port = free_port()
    d = TMP / "mlserver" / model
    d.mkdir(parents=True, exist_ok=True)
    (d / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": workers}))
    (d / "model-settings.json").write_text(json.dumps({
        "name": "model", "implementation": "runtime.TFSavedModel",
        "max_batch_size": 32, "max_batch_time": 0.005,
        "parameters": {"uri": str(base / "model")}}))
    env = {**_quiet_tf(), "PYTHONPATH": str(PEERS / "mlserver")}
    cmd = [venv / "bin" / "mlserver", "start", str(d)]
    return HostServer(f"mlserver-{model}", cmd, env=env, cwd=d, port=port), "/v2/models/model/infer", "v2"


def start_ours(model, base, workers, extra_env=None):
    port = free_port()
    env = {"SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port), **(extra_env or {})}
    serve = REPO / ".venv" / "bin" / "serve"
    return HostServer(f"ours-{model}", [serve], env=env, cwd=REPO, port=port), "/invocations", "json"


def start_ours_container(model, base, workers, image, extra_env=None, platform=None):
    port = free_port()
    srv = ContainerServer(model, image, base / "model", port, env=extra_env, platform=platform, host_network=True)
    return srv, "/invocations", "json"


def check_json(data: bytes):
    v = json.loads(data)
    if isinstance(v, dict):
        v = v.get("predictions", v.get("outputs"))
    if not isinstance(v, list) or len(v) != 1:
        raise ValueError(f"unexpected response: {data[:200]!r}")


def check_v2(data: bytes):
    v = json.loads(data)
    if v["outputs"][0]["shape"][0] != 1:
        raise ValueError(f"unexpected response: {data[:200]!r}")
