"""Every command shown in README.md is run by a test here, as the README writes it.

The commands are read from the README's ```sh blocks (backslash continuations joined), so a new
command that no test below knows makes `test_every_readme_command_has_a_test` fail. How each kind
is run:

- `curl ...`: against the real server (`serve` on the host, tests/fixtures/server.py) of the example
  digits model, with `localhost:8080` replaced by that server's address; the answer must be the one
  the README shows. The model is the one `make example` built (examples/digits/model), or, on a
  clean clone, trained once per session into a temporary folder (tests/fixtures/example.py).
- `pip install ./deploy`: in a fresh venv in a temporary folder; then `deploy --help` works and
  no TensorFlow, NumPy, Flask or gunicorn was installed.
- `deploy ...`: that fresh venv's `deploy`, against moto (tests/fixtures/moto.py), with the
  README's image put into moto's ECR as a two-platform index.
- `make ...`: these build images, serve until Ctrl-C or run the whole suite, so they cannot run
  inside a test; they are checked with `make -n TARGET ...` (the commands make would run), which
  must show the recipe that does what the README says.

The curl lines of docs/http.md run here too, against the same server.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server import REPO, start_host_server

README = REPO / "README.md"
HTTP_MD = REPO / "docs" / "http.md"
README_ADDRESS = "localhost:8080"


def shell_commands(path: Path) -> list[str]:
    """The command lines of a Markdown file's ```sh / ```bash blocks (and `$ ` lines of ```console
    blocks), continuations joined, comment-only lines dropped."""
    commands = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.S | re.M):
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        text = body.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


KINDS = {
    "curl": lambda c: words(c)[0] == "curl",
    "pip install ./deploy": lambda c: words(c) == ["pip", "install", "./deploy"],
    "deploy": lambda c: words(c)[0] == "deploy",
    "make": lambda c: words(c)[0] == "make",
}


def readme_commands(kind: str) -> list[str]:
    return [c for c in shell_commands(README) if KINDS[kind](c)]


def test_every_readme_command_has_a_test():
    commands = shell_commands(README)
    assert len(commands) >= 10, f"the README's commands were not found: {commands}"
    for command in commands:
        kinds = [k for k, match in KINDS.items() if match(command)]
        assert len(kinds) == 1, (f"README command {command!r} is run by no test in {Path(__file__).name} "
                                 f"(kinds: {list(KINDS)}): add one")


# --- curl against the example model ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_server(example_root):
    with start_host_server(example_root / "examples" / "digits" / "model") as server:
        yield server


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    """`make -n ARGS` as a user would type it: not as a sub-make of the `make test` running these tests,
    whose MAKEFLAGS would pass its own variables down and add "Entering directory" lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def bash(command: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"  # python3 with NumPy
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def at(command: str, server) -> str:
    assert README_ADDRESS in command, f"{command!r} does not address {README_ADDRESS}"
    return command.replace(README_ADDRESS, server.url.removeprefix("http://"))


def shown_answer() -> list[float]:
    """The answer the README shows under the first request."""
    blocks = re.findall(r"^```\n(\{.*?\})\n```", README.read_text(), flags=re.S | re.M)
    assert len(blocks) == 1, "the README should show one answer block"
    return json.loads(blocks[0])["predictions"][0]


def test_first_request_answers_as_the_readme_shows(digits_server, workdir):
    ping, invocation = readme_commands("curl")
    proc = bash(at(ping, digits_server), workdir)
    assert proc.returncode == 0 and proc.stdout == "200\n", proc
    proc = bash(at(invocation, digits_server), workdir)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)["predictions"]
    assert len(answer) == 1 and len(answer[0]) == 10
    assert max(range(10), key=answer[0].__getitem__) == 7   # request.json holds a 7
    assert answer[0] == pytest.approx(shown_answer(), abs=2e-3)


def test_http_md_curl_lines_work_against_the_example_model(digits_server, workdir):
    commands = shell_commands(HTTP_MD)
    assert commands[0].startswith("U=") and len(commands) >= 8, commands
    setup = at(commands[0], digits_server)
    for command in commands[1:]:
        proc = bash(f"{setup}; {command}", workdir)
        assert proc.returncode == 0, (command, proc.stderr)
        out = proc.stdout.strip()
        if "-o out.npy" in command:
            import numpy as np
            assert np.load(workdir / "out.npy").shape == (2, 10)
            continue
        if "does not fit" in command or "[[0.1, 0.2, 0.3]]" in command:
            assert "does not accept shape (1, 3)" in json.loads(out)["error"], out
            continue
        if "text/csv" in command:
            rows = [[float(v) for v in line.split(",")] for line in out.splitlines()]
        elif "jsonlines" in command:
            rows = [json.loads(line) for line in out.splitlines()]
        else:
            doc = json.loads(out)
            assert "error" not in doc, (command, doc)
            rows = doc.get("predictions", doc.get("outputs"))
        assert rows and all(len(row) == 10 for row in rows), (command, out)
        if "zeros" not in command:
            assert all(max(range(10), key=row.__getitem__) == 7 for row in rows), (command, out)


# --- pip install ./deploy and the deploy commands ---------------------------------------------------


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    """A fresh venv in which the README's `pip install ./deploy` has run, from a copy of the
    repository's root (setuptools writes build/ into the source folder; the repository stays clean)."""
    import shutil

    (command,) = readme_commands("pip install ./deploy")
    scratch = tmp_path_factory.mktemp("deploy-venv")
    venv = scratch / "venv"
    shutil.copytree(REPO / "deploy", scratch / "deploy",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    proc = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


def in_venv(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return env


def test_pip_install_deploy_gives_deploy_without_tensorflow(deploy_venv):
    env = in_venv(deploy_venv)
    proc = subprocess.run(["bash", "-c", "command -v deploy && deploy --help"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(deploy_venv / "bin" / "deploy")
    assert "usage: deploy" in proc.stdout and "create" in proc.stdout
    listed = subprocess.run([str(deploy_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "sagemaker-tf-deploy" in installed and "boto3" in installed
    heavy = installed & {"tensorflow", "tensorflow-cpu", "keras", "numpy", "flask", "gunicorn"}
    assert not heavy, f"pip install ./deploy pulled in {sorted(heavy)}"


def put_in_moto_ecr(image: str, aws_env: dict, archs: tuple[str, ...] = ("arm64", "amd64")) -> None:
    """IMAGE (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG, as the docs name it) put into moto's ECR
    as an index of ARCHS (two platforms: what build.sh pushes), its repository made if missing."""
    import boto3

    from tests.fixtures.moto import _index

    registry, _, repo_tag = image.partition("/")
    repo, _, tag = repo_tag.partition(":")
    assert registry == f"{aws_env['account']}.dkr.ecr.{aws_env['region']}.amazonaws.com", \
        f"{image}: the docs' images should name the account and region moto stands in for"
    ecr = boto3.client("ecr", region_name=aws_env["region"])
    try:
        ecr.create_repository(repositoryName=repo)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    ecr.put_image(repositoryName=repo, imageManifest=_index(list(archs)), imageTag=tag,
                  imageManifestMediaType="application/vnd.oci.image.index.v1+json")


@pytest.mark.deploy
def test_deploy_commands_run_against_moto(deploy_venv, aws_env, example_root):
    import boto3

    commands = readme_commands("deploy")
    verbs = [words(c)[1] for c in commands]
    assert verbs[0] == "create" and verbs[-1] == "delete", verbs
    put_in_moto_ecr(words(commands[0])[words(commands[0]).index("--image") + 1], aws_env)
    env = in_venv(deploy_venv)
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], cwd=example_root, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        if words(command)[1] == "create":
            assert "endpoint digits is InService" in proc.stdout, proc.stdout
    sagemaker = boto3.client("sagemaker", region_name=aws_env["region"])
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_models()["Models"] == []


# --- make targets: make -n ------------------------------------------------------------------------

# What `make -n` must show for each target the README names: the recipe that does what it says.
MAKE_SHOWS = {
    "run": [r"\./build\.sh --platform linux/\w+ --tag \S+ --load",
            r"docker run --rm .*-p 8080:8080 -v \S+/examples/digits/model:/opt/ml/model:ro \S+ serve"],
    "push": [r"\./build\.sh --platform linux/arm64,linux/amd64 --tag sagemaker-tf-graviton:1\.0 --push "
             r"--ecr 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com"],
    "test-unit": [r"-m pytest -p tests\.unit\.without_tensorflow tests/unit"],
    "test": [r"-m pytest -p tests\.unit\.without_tensorflow tests/unit",
             r"-m pytest tests/host tests/container tests/deploy"],
    "test-host": [r"-m pytest -p tests\.unit\.without_tensorflow tests/unit",
                  r'-m pytest -m "not container" tests/host tests/deploy'],
}


@pytest.mark.parametrize("command", readme_commands("make"))
def test_make_commands_do_what_the_readme_says(command):
    args = words(command)[1:]
    targets = [a for a in args if "=" not in a]
    assert len(targets) == 1, command
    (target,) = targets
    assert target in MAKE_SHOWS, f"README runs `make {target}`: say in MAKE_SHOWS what `make -n` must show"
    proc = make_dry_run(*args)
    assert proc.returncode == 0, proc.stderr
    for pattern in MAKE_SHOWS[target]:
        assert re.search(pattern, proc.stdout), f"`make -n {' '.join(args)}` does not show {pattern!r}:\n{proc.stdout}"
    for assignment in (a for a in args if "=" in a):
        name, _, value = assignment.partition("=")
        if name == "PYTEST_ARGS":
            assert proc.stdout.rstrip().endswith(value), proc.stdout
