"""Process, memory and load-generation plumbing shared by bench.run and bench.tuning.

Only loopback traffic: every server binds or is published on 127.0.0.1 and wrk targets it.
Every server is started in its own session (setsid) so that its whole tree - including
daemons that re-parent themselves, like MMS's Java frontend - can be found, measured and
stopped by session id, and nothing else is touched.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
TMP = RESULTS / "tmp"
VENVS = BENCH / ".venvs"
PEERS = BENCH / "peers"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def free_port(below: int = 0) -> int:
    """A free loopback port; `below` caps it (MMS refuses ports >= 32767, Java's Short.MAX_VALUE)."""
    if below:
        import random
        for _ in range(200):
            port = random.randrange(20000, below)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- venvs

def ensure_venv(name: str, requirements: Path) -> Path:
    """bench/.venvs/<name> with <requirements> installed; rebuilt when the file changes."""
    venv = VENVS / name
    stamp = venv / ".requirements"
    want = requirements.read_text()
    if stamp.exists() and stamp.read_text() == want and (venv / "bin" / "python").exists():
        return venv
    log(f"[venv] creating {venv} from {requirements.relative_to(REPO)} (first use; a few minutes)")
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    with open(VENVS / f"{name}.pip.log", "w") as logf:
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)],
                           stdout=logf, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"pip install for {name} failed; see {VENVS / (name + '.pip.log')}")
    stamp.write_text(want)
    return venv


# ---------------------------------------------------------------- memory

def _ppid_map() -> dict:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                rest = s[s.rindex(")") + 2:].split()
                out[int(d)] = (int(rest[1]), int(rest[3]))  # ppid, session id
            except (OSError, ValueError, IndexError):
                pass
    return out


def session_pids(sid: int) -> list:
    return [p for p, (_, s) in _ppid_map().items() if s == sid]


def tree_pids(root: int) -> list:
    m = _ppid_map()
    kids = {}
    for p, (pp, _) in m.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in m:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def memory_mib(pids) -> dict:
    """RSS summed over processes (forked workers' shared pages count once per process, as
    `ps` shows it) and PSS (shared pages divided among the sharers: the honest total)."""
    rss = pss = 0
    n = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        n += 1
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except OSError:
            pass
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": n}


# ---------------------------------------------------------------- CPU per process

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(stat_path: str) -> float:
    with open(stat_path) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / _TICK      # utime + stime


def role_of(pid: int, root: int) -> str:
    """master (the server's first process), model (serve.model_process.main) or http (the other
    processes: gunicorn workers; BYOC's workers hold TensorFlow)."""
    if pid == root:
        return "master"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return "http"
    return "model" if b"serve.model_process.main" in cmd else "http"


def cpu_snapshot(pids, root: int) -> dict:
    """{pid: (role, CPU seconds, {thread name: CPU seconds})} of a server's processes now."""
    out = {}
    for pid in pids:
        try:
            threads: dict[str, float] = {}
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip().rstrip("0123456789") or "?"
                threads[comm] = threads.get(comm, 0.0) + _cpu_of(f"/proc/{pid}/task/{tid}/stat")
            out[pid] = (role_of(pid, root), _cpu_of(f"/proc/{pid}/stat"), threads)
        except (OSError, ValueError):
            pass
    return out


def cpu_per_request(before: dict, after: dict, requests: int) -> dict:
    """CPU ms per request by process role, all roles together, and by thread name within each role
    (where it goes: a model process's Python loop against TensorFlow's compute threads, say)."""
    n = max(1, requests)
    roles: dict[str, float] = {}
    threads: dict[str, dict[str, float]] = {}
    for pid, (role, cpu, thr) in after.items():
        was = before.get(pid, (role, 0.0, {}))
        roles[role] = roles.get(role, 0.0) + cpu - was[1]
        bucket = threads.setdefault(role, {})
        for name, seconds in thr.items():
            bucket[name] = bucket.get(name, 0.0) + seconds - was[2].get(name, 0.0)
    return {"roles": {r: round(v * 1e3 / n, 3) for r, v in sorted(roles.items())},
            "total": round(sum(roles.values()) * 1e3 / n, 3),
            "threads": {r: {k: round(v * 1e3 / n, 3) for k, v in sorted(t.items(), key=lambda kv: -kv[1])
                            if v * 1e3 / n >= 0.005} for r, t in threads.items()}}


# ---------------------------------------------------------------- servers

class HostServer:
    """A server process tree started in its own session on this host."""

    def __init__(self, name, cmd, env=None, cwd=None, port=None, logdir=TMP / "logs"):
        self.name, self.cmd, self.port = name, [str(c) for c in cmd], port
        logdir.mkdir(parents=True, exist_ok=True)
        self.logpath = logdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        self._logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(self.cmd, env=full_env, cwd=cwd, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.sid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}"

    def pids(self):
        return session_pids(self.sid)

    @property
    def root(self) -> int:
        return self.proc.pid

    def memory(self):
        return memory_mib(self.pids())

    def alive(self):
        return self.proc.poll() is None

    def logs(self, tail=4000):
        try:
            return self.logpath.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, timeout=15.0):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + timeout
            while time.time() < deadline and self.pids():
                try:
                    self.proc.wait(0.2)
                except subprocess.TimeoutExpired:
                    pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._logf.close()


class ContainerServer:
    """A container reached on 127.0.0.1:<port>; memory read from its process tree.

    host_network: the container shares the host's network and serves on <port> itself
    (SAGEMAKER_BIND_TO_PORT, which the image supports). Published with -p instead, every connection
    from 127.0.0.1 goes through Docker's userland proxy (docker-proxy), a process that copies each
    byte once more: at 32 connections it cost this machine's MLP more than the server did, and
    SageMaker's traffic never passes through it. Throughput runs use the host network."""

    def __init__(self, name, image, model_dir, port, env=None, platform=None, cmd=("serve",), host_network=False):
        self.name = f"bench-{name}-{os.getpid()}"
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        network = (["--network", "host", "-e", f"SAGEMAKER_BIND_TO_PORT={port}"] if host_network
                   else ["-p", f"127.0.0.1:{port}:8080"])
        args = ["docker", "run", "-d", "--rm", "--name", self.name, *network,
                "-v", f"{model_dir}:/opt/ml/model:ro"]
        if platform:
            args += ["--platform", platform]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        args += [image, *cmd]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"docker run failed: {r.stderr.strip()}")
        self.cid = r.stdout.strip()

    def _init_pid(self):
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.cid], capture_output=True, text=True)
        try:
            return int(r.stdout.strip())
        except ValueError:
            return 0

    def pids(self):
        pid = self._init_pid()
        return tree_pids(pid) if pid else []

    @property
    def root(self) -> int:
        return self._init_pid()

    def memory(self):
        return memory_mib(self.pids())

    def alive(self):
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.cid], capture_output=True, text=True)
        return r.stdout.strip() == "true"

    def logs(self, tail=4000):
        r = subprocess.run(["docker", "logs", self.cid], capture_output=True, text=True, errors="replace")
        return (r.stdout + r.stderr)[-tail:]

    def stop(self, timeout=15.0):
        subprocess.run(["docker", "stop", "-t", str(int(timeout)), self.cid], capture_output=True)
        subprocess.run(["docker", "rm", "-f", self.cid], capture_output=True)


def post(url, body: bytes, content_type="application/json", timeout=60.0):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(server, path, body: bytes, timeout=300.0, check=None):
    """Poll until POST <path> answers 200 (MMS answers /ping before its model is loaded,
    so readiness is a real inference). Returns seconds to first answer and the body."""
    t0 = time.time()
    last = ""
    while time.time() - t0 < timeout:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited during start-up:\n{server.logs()}")
        try:
            status, data = post(server.url + path, body, timeout=30)
            if status == 200:
                if check:
                    check(data)
                return time.time() - t0, data
            last = f"HTTP {status}: {data[:300]!r}"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.5)
    raise TimeoutError(f"{server.name} not ready after {timeout:.0f}s ({last})\n{server.logs()}")


# ---------------------------------------------------------------- wrk

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(ctype)s"
local f = assert(io.open("%(body)s", "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def wrk_script(body_path: Path, ctype="application/json") -> Path:
    p = TMP / "wrk" / (Path(body_path).name + ".lua")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(WRK_LUA % {"body": str(body_path), "ctype": ctype})
    return p


def wrk(url: str, script: Path, connections: int, duration: float, timeout: float = 10.0) -> dict:
    """One wrk run, one thread. Returns req/s, p50/p99 in ms, and error counts."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(round(duration)))}s", "--timeout", f"{int(timeout)}s",
           "--latency", "-s", str(script), url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 60)
    line = next((l for l in r.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk produced no result (rc={r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    d = json.loads(line[len("WRKJSON "):])
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return {
        "connections": connections,
        "duration_s": round(secs, 2),
        "requests": d["requests"],
        "rps": round(d["requests"] / secs, 1) if secs else 0.0,
        "p50_ms": round(d["p50_us"] / 1000, 2),
        "p90_ms": round(d["p90_us"] / 1000, 2),
        "p99_ms": round(d["p99_us"] / 1000, 2),
        "mean_ms": round(d["mean_us"] / 1000, 2),
        "max_ms": round(d["max_us"] / 1000, 2),
        "non_2xx": d["status"],
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "socket_errors": errors,
    }


def have_docker() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
