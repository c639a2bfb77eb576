"""The README's `make run`, then its first request, against the amd64 image.

`make run` builds the image and then serves in the foreground until Ctrl-C, so the test does not
call it as a whole: it takes the `docker run` line that `make -n run IMAGE=... PORT=...` prints
(the recipe itself, not a copy of it), runs that line with the test image and a free port, and then
runs the README's two curl lines (tests/host/test_readme.py reads them) against it. The image
build is tests/fixtures/docker.py's session fixture; the example model is the one `make example`
built, or one trained for the session (tests/fixtures/example.py).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid

import pytest

from tests.fixtures.docker import docker
from tests.fixtures.server import REPO, free_port
from tests.host.test_readme import at, bash, make_dry_run, readme_commands, shown_answer

pytestmark = pytest.mark.container


def docker_run_line(image: str, port: int, model_dir) -> list[str]:
    proc = make_dry_run("run", f"IMAGE={image}", f"PORT={port}")
    assert proc.returncode == 0, proc.stderr
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("docker run ")]
    argv = shlex.split(line)
    mount = argv.index("-v") + 1
    assert argv[mount] == f"{REPO}/examples/digits/model:/opt/ml/model:ro", argv
    argv[mount] = f"{model_dir}:/opt/ml/model:ro"       # the example model, wherever it was built
    assert argv[-2:] == [image, "serve"] and f"{port}:8080" in argv, argv
    return argv


class Server:
    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}"


def test_make_run_then_the_first_request(image_amd64, example_root, workdir):
    port = free_port()
    argv = docker_run_line(image_amd64, port, example_root / "examples" / "digits" / "model")
    name = f"readme-run-{uuid.uuid4().hex[:8]}"
    argv[2:2] = ["--name", name]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Server(port)
    try:
        ping, invocation = readme_commands("curl")
        deadline = time.monotonic() + 300
        while True:
            answer = bash(at(ping, server), workdir).stdout
            if answer == "200\n":
                break
            assert proc.poll() is None, f"the container exited {proc.returncode}: {proc.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, f"/ping answered {answer!r} for 300 s"
            time.sleep(1)
        out = bash(at(invocation, server), workdir)
        assert out.returncode == 0, out.stderr
        probs = json.loads(out.stdout)["predictions"][0]
        assert max(range(10), key=probs.__getitem__) == 7
        # the image picks BF16 fast math where the CPU has bf16 units (docs/migration.md: up to ~6e-3)
        assert probs == pytest.approx(shown_answer(), abs=1e-2)
    finally:
        docker("stop", "-t", "30", name, check=False, timeout=60)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, "the container should stop cleanly on docker stop"
