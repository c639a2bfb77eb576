"""The walk-throughs of docs/deploy.md, docs/transform.md, docs/migration.md and docs/multi-model.md,
run as a new user would type them (issue 24: "every documented command is run by a test, and the
docs show real output").

For each doc, every `$ ` line of its ```console blocks runs in order, in one fresh strict-moto
state (tests/fixtures/moto.py `aws_env`, plus the doc's own moto extension), in a scratch folder
where `examples/` is the example model's (tests/fixtures/example.py). The images the docs name are
put into moto's ECR as tests/host/test_readme.py puts the README's (`put_in_moto_ecr`; a tag
ending in -amd64 or -arm64 as that one platform, others as both). A `$ NAME=value` line sets a
shell variable: `$NAME` is expanded in the commands, and the value is shown as `$NAME` in the output. Each
command's printed lines (stdout and stderr as one stream, in the order printed) and its exit code
are compared with the doc's:

- `deploy ...` runs in process (commands.main.main), with `--poll 0.05` added where the
  subcommand takes it (moto answers at once; the waits would only sleep);
- other lines (`python examples/...`, `sed`, `head`, `cmp`) run with bash, `python` being this
  venv's; `make example` is what the `example_root` fixture provides (`make -n -B example` must
  show its recipe, scikit-learn's pinned install included);
- the exit code: `$ echo $?` after the command, or a last line `(exit N)`; otherwise 0, or not 0
  when the last line shown is `deploy: error: ...`;
- a doc that shows no output for a command is checked for its exit code only.

`DOCS_WALKTHROUGH_WRITE=1` writes each differing command's real output into the doc (the test
still fails that run): how the docs' output is regenerated.

Normalization, both sides (NORMALIZE): generated names' timestamps (`digits-20261126-215259-845`),
durations (`(0m00s)`), sizes (`0.3 MB`, `294.5 KB`, a size in bytes in `models list`: the example
model is trained anew, so its archive's bytes vary), dates and times, and runs of spaces; a line
`...` in the doc matches any number of lines.

Shorthand and scenarios, as the doc's own comment says:
- `deploy create ... --name N [flags]` is the doc's last full `deploy create` that succeeded, with
  those flags changed;
- a comment `# Ctrl-C while Creating` / `# kill -TERM while Updating` (SIGINT, SIGTERM, SIGHUP) runs
  the command as a real process (test_deploy_interrupts.Deploy) against an endpoint moto holds in
  that state, sends the signal once the doc's status line appears, and lets SageMaker finish
  (`release_endpoint`) once the command waits for it; `the update completes meanwhile` makes the
  held update take; the endpoint an update needs is created first if the walk-through deleted it;
- `# the container fails its health check` makes moto's endpoint go Creating, then Failed with
  SageMaker's ping-failure reason;
- `deploy invoke` of a single-model endpoint: moto answers invoke_endpoint with a canned body; the
  walk-through sets it to the body the doc shows (the doc says so), so what is checked is the
  command's path and printing, not the model's answer (that is `deploy local`'s, below).

`deploy local` / `deploy transform --local` lines need a real image: LOCAL names the test that runs
each (with its argv read from the doc), and `test_every_console_line_is_run` fails on a line that
is neither run here nor listed there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sagemaker_tf_deploy.commands.main import _finish_parser, build_parser, main
from tests.deploy.test_deploy_interrupts import Deploy
from tests.fixtures import moto as moto_fixture
from tests.fixtures import moto_transform
from tests.fixtures.server import REPO
from tests.host.test_readme import make_dry_run, put_in_moto_ecr
from tests.unit.test_docs_commands import DOCS, Entry, console_blocks

pytestmark = pytest.mark.deploy

DOC = {doc.name: doc for doc in DOCS}
NORMALIZE = [
    (re.compile(r"\d{8}-\d{6}-\d{3}"), "<stamp>"),
    (re.compile(r"\(\d+m\d{2}s\)"), "(<duration>)"),
    (re.compile(r"\d[\d,]*(?:\.\d+)? ?(?:MB|KB|MiB|GB|bytes)\b"), "<size>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\+00:00| UTC)?"), "<date>"),
    (re.compile(r'("size": |\t)\d+(?=,?$|\t)'), r"\1<bytes>"),      # models list --output json|text
    (re.compile(r" {2,}"), "  "),
]
SIGNALS = {"Ctrl-C": "SIGINT", "kill -TERM": "SIGTERM", "kill -HUP": "SIGHUP"}
PING_FAILURE = ("The primary container for production variant AllTraffic did not pass the ping health check. "
                "Please check CloudWatch logs for this endpoint.")

# Lines that need a real image: the test that runs each, reading the line from the doc.
LOCAL_TEST = "tests/deploy/test_docs_walkthrough.py::test_local_lines_with_the_amd64_image"
FPMATH_TEST = "tests/deploy/test_deploy_compare.py::test_local_fpmath_check_with_the_arm64_image"
FPMATH_LINE = r"deploy local --image sagemaker-tf-graviton:test-arm64 .* --fpmath-check .*"
SIDE_BY_SIDE_TEST = "tests/deploy/test_deploy_compare.py::test_compare_amd64_image_with_arm64_image"
SIDE_BY_SIDE_SERVERS = r"deploy local --image sagemaker-tf-graviton:test-(amd|arm)64 .* --no-logs &"
SIDE_BY_SIDE_COMPARE = r"deploy compare --requests .* --url http://127\.0\.0\.1:18081 --url http://127\.0\.0\.1:18082 .*"
MULTI_MODEL_TEST = "tests/deploy/test_deploy_multimodel.py::test_local_multi_model_with_the_amd64_image"
LOCAL = {   # doc -> {a regular expression the whole line matches: the test that runs it}
    "deploy.md": {
        r"deploy local --image sagemaker-tf-graviton:test-amd64 .* --invoke .*": LOCAL_TEST,
        r"deploy transform --local .*": LOCAL_TEST,
    },
    "transform.md": {
        r"python examples/digits/batch_input\.py digits-batch/": LOCAL_TEST,
        r"cp -r digits-batch digits-bad && sed -i .*": LOCAL_TEST,
        r"deploy transform --local .*": LOCAL_TEST,
        r"head -1 digits-out.*": LOCAL_TEST,
        r"cmp digits-out/.*": LOCAL_TEST,
    },
    "migration.md": {
        FPMATH_LINE: FPMATH_TEST,
        SIDE_BY_SIDE_SERVERS: SIDE_BY_SIDE_TEST,
        SIDE_BY_SIDE_COMPARE: SIDE_BY_SIDE_TEST,
    },
    "multi-model.md": {
        r"deploy local --image .* --multi-model .*": MULTI_MODEL_TEST,
        r"deploy invoke local --local .*": MULTI_MODEL_TEST,
        r"python client\.py": MULTI_MODEL_TEST,
        r"curl .*127\.0\.0\.1:8080/invocations.*": MULTI_MODEL_TEST,
    },
}


def normalized(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in NORMALIZE:
            line = pattern.sub(replacement, line)
        out.append(line.rstrip())
    return out


def mismatch(expected: list[str], actual: list[str]) -> str | None:
    """None when ACTUAL is what EXPECTED shows (normalized; a `...` line matches any lines), else a diff."""
    want, got = normalized(expected), normalized(actual)
    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == "..." else re.escape(line) + r"\n" for line in want)
    if re.fullmatch(pattern, "".join(line + "\n" for line in got)):
        return None
    return "\n".join(difflib.unified_diff(want, got, "doc", "run", lineterm=""))


def argv_of(command: str) -> list[str]:
    return shlex.split(command, comments=True)[1:]


def with_flags(base: list[str], changes: list[str]) -> list[str]:
    """BASE argv with the flags in CHANGES (`--name held --on-interrupt keep`) set or replaced."""
    argv = list(base)
    i = 0
    while i < len(changes):
        flag = changes[i]
        value = changes[i + 1] if i + 1 < len(changes) and not changes[i + 1].startswith("--") else None
        if flag in argv:
            at = argv.index(flag)
            if value is not None:
                argv[at + 1] = value
        else:
            argv += [flag] + ([value] if value is not None else [])
        i += 2 if value is not None else 1
    return argv


def takes_poll(argv: list[str]) -> bool:
    parser = _finish_parser(build_parser())
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args([*argv, "--poll", "0.05"])
    except SystemExit:
        return False
    return "--poll" not in argv


class Walk:
    """One doc's walk-through in one moto state, in folder CWD."""

    def __init__(self, doc: str, cwd: Path, aws_env: dict):
        self.doc, self.cwd, self.aws_env = doc, cwd, aws_env
        self.last_create: list[str] | None = None
        self.ran: list[Entry] = []
        self.failures: list[str] = []
        self.rewrites: list[tuple[Entry, list[str]]] = []
        self.seconds: list[tuple[int, float]] = []
        self.vars: dict[str, str] = {}
        self.images: set[str] = set()

    # --- running one line --------------------------------------------------------------------
    def deploy(self, argv: list[str]) -> tuple[int, list[str]]:
        if takes_poll(argv):
            argv = [*argv, "--poll", "0.05"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), contextlib.chdir(self.cwd):
            code = main(argv)
        return code, buf.getvalue().splitlines()

    def shell(self, command: str) -> tuple[int, list[str]]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        proc = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=env, capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, (proc.stdout + proc.stderr).splitlines()

    def interrupted(self, argv: list[str], entry: Entry) -> tuple[int, list[str]]:
        """ARGV as a real process, stopped by the signal the comment names in the phase it names."""
        sig = next(name for words, name in SIGNALS.items() if words in entry.comment)
        phase = re.search(r"while (Creating|Updating)", entry.comment).group(1)
        name = argv[argv.index("--name") + 1] if argv[0] == "create" else argv[1]
        if argv[0] == "update" and moto_fixture.endpoint_state(name) is None:
            code, lines = self.deploy(with_flags(self.last_create, ["--name", name]))
            assert code == 0, lines
        moto_fixture.hold_endpoint(name, phase)
        if takes_poll(argv):
            argv = [*argv, "--poll", "0.05"]
        with contextlib.chdir(self.cwd):
            run = Deploy(*argv)
        run.wait_for(f"{name}: {phase}")
        run.signal(sig)
        keep = "--on-interrupt" in argv and argv[argv.index("--on-interrupt") + 1] == "keep"
        if not keep:
            # SageMaker takes minutes: the wait prints the status at least once before it ends
            waits = "SageMaker cannot delete endpoint" if phase == "Creating" else "SageMaker cannot cancel"
            run.wait_for(waits)
            with run.cond:
                assert run.cond.wait_for(lambda: any(
                    line.startswith(f"{name}: {phase}") for line in
                    run.lines[next(i for i, line in enumerate(run.lines) if waits in line):]), timeout=60), run.err
            outcome = "InService" if phase == "Creating" or "completes" in entry.comment else "RolledBack"
            moto_fixture.release_endpoint(name, outcome)
        code, out, err = run.finish()
        if keep:
            moto_fixture.release_endpoint(name, "InService")       # SageMaker finishes on its own
        return code, (err + out).splitlines()

    def run(self, entry: Entry) -> None:
        started = time.monotonic()
        try:
            self._run(entry)
        finally:
            self.seconds.append((entry.line, time.monotonic() - started))

    def _run(self, entry: Entry) -> None:
        if re.fullmatch(r"[A-Z_]+=\S+", entry.command):          # $ IMAGE=...: a shell variable
            name, _, value = entry.command.partition("=")
            self.vars[name] = value
            return
        command = entry.command
        for name in sorted(self.vars, key=len, reverse=True):
            command = command.replace(f"${name}", self.vars[name])
        entry = dataclasses.replace(entry, command=command)
        words = shlex.split(entry.command)
        if words[0] == "make":
            # what the example_root fixture did; `make example` from `make venv` alone installs what
            # train.py and batch_input.py need (issue 24), pinned as the tests pin it
            assert words[1:] == ["example"], entry.command
            proc = make_dry_run("-B", "example")
            assert "pip install -q -r examples/digits/requirements.txt" in proc.stdout, proc.stdout
            assert "examples/digits/train.py --out examples/digits" in proc.stdout, proc.stdout
            pins = [line for line in (REPO / "examples" / "digits" / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
            assert pins and set(pins) <= set((REPO / "tests" / "requirements.txt").read_text().splitlines()), pins
            assert (self.cwd / "examples" / "digits" / "model" / "1" / "saved_model.pb").is_file()
            return
        if words[0] != "deploy":
            code, lines = self.shell(entry.command)
        else:
            argv = argv_of(entry.command)
            if "..." in argv:
                assert argv[0] == "create" and self.last_create, f"{entry.command}: shorthand for what?"
                argv = with_flags(self.last_create, [a for a in argv[1:] if a != "..."])
            self.before(argv, entry)
            if any(words in entry.comment for words in SIGNALS):
                code, lines = self.interrupted(argv, entry)
            else:
                code, lines = self.deploy(argv)
            if argv[0] == "create" and "..." not in entry.command and code == 0:
                self.last_create = argv
        self.check(entry, code, lines)

    def before(self, argv: list[str], entry: Entry) -> None:
        """What the doc says SageMaker did around this command, played by moto."""
        image = argv[argv.index("--image") + 1] if "--image" in argv else ""
        if ".dkr.ecr." in image and image not in self.images:
            tag = image.rsplit(":", 1)[1]
            archs = ("amd64",) if tag.endswith("-amd64") else ("arm64",) if tag.endswith("-arm64") else ("arm64", "amd64")
            put_in_moto_ecr(image, self.aws_env, archs)
            self.images.add(image)
        if "fails its health check" in entry.comment:
            name = argv[argv.index("--name") + 1]
            moto_fixture.script_endpoint_status(name, ["Creating", "Failed"], PING_FAILURE)
        if argv[0] == "invoke" and "--target-model" not in argv and entry.out:
            requests.post(f"{self.aws_env['endpoint_url']}/moto-api/static/sagemaker/endpoint-results",
                          json={"account_id": self.aws_env["account"], "region": self.aws_env["region"],
                                "results": [{"Body": "\n".join(entry.out), "ContentType": "application/json"}]},
                          timeout=10).raise_for_status()
        if argv[0] == "transform" and "--local" not in argv:
            statuses = [m.group(1) for line in entry.out
                        if (m := re.fullmatch(r"tf-graviton-transform-\S+: (\w+) \(\d+m\d+s\)", line))]
            reason = next((m.group(1) for line in entry.out if (m := re.search(r" Failed: (.*)$", line))), None)
            if statuses:
                moto_transform.script_next_job(statuses, reason)

    def check(self, entry: Entry, code: int, lines: list[str]) -> None:
        where = f"{entry.doc}:{entry.line}: `{entry.command}`"
        for name in sorted(self.vars, key=lambda n: -len(self.vars[n])):     # shown as the doc writes them
            lines = [line.replace(self.vars[name], f"${name}") for line in lines]
        expected_code = entry.code
        last = entry.out[-1] if entry.out else ""
        if expected_code is None and last.startswith("deploy: interrupted by "):
            expected_code = 128 + getattr(signal, last.rsplit(" ", 1)[1])
        elif expected_code is None:
            expected_code = 0 if not last.startswith("deploy: error:") else code or -1
        problems = []
        if code != expected_code:
            problems.append(f"exit {code}, the doc says {expected_code}")
        if entry.out:
            diff = mismatch(entry.out, lines)
            if diff:
                problems.append(f"output differs from the doc:\n{diff}")
        if problems:
            self.failures.append(f"{where}: " + "\n".join(problems) + "\n--- its output:\n" + "\n".join(lines))
            if entry.out and mismatch(entry.out, lines):
                self.rewrites.append((entry, shown(entry.out, lines)))
        self.ran.append(entry)


def shown(doc_lines: list[str], real: list[str]) -> list[str]:
    """What the doc should show for REAL output: all of it, except that a doc starting with `...`
    keeps it and shows the real lines from the one its next line matches."""
    if len(doc_lines) > 1 and doc_lines[0].strip() == "...":
        anchor = normalized([doc_lines[1]])[0]
        for i, line in enumerate(normalized(real)):
            if line == anchor:
                return ["...", *real[i:]]
    return list(real)


def rewrite(doc: Path, rewrites: list[tuple[Entry, list[str]]]) -> None:
    """Put the real output into DOC in place of what it showed (DOCS_WALKTHROUGH_WRITE=1)."""
    lines = doc.read_text().split("\n")
    for entry, real in sorted(rewrites, key=lambda r: -r[0].out_lines[0]):
        start, end = entry.out_lines
        if lines[start - 1:end - 1] != [" " * entry.indent + line for line in entry.out]:
            print(f"{doc.name}:{start}: changed since it was read; not rewritten")     # edited meanwhile
            continue
        lines[start - 1:end - 1] = [" " * entry.indent + line for line in real]
    doc.write_text("\n".join(lines))


def documented(doc: str, pattern: str) -> list[Entry]:
    """The lines of DOC that LOCAL's PATTERN matches, for the test LOCAL names to run as written."""
    assert pattern in LOCAL[doc], pattern
    return [e for block in console_blocks(DOC[doc]) for e in block if re.fullmatch(pattern, e.command)]


def local_entry(doc: str, entry: Entry) -> str | None:
    return next((test for pattern, test in LOCAL[doc].items() if re.fullmatch(pattern, entry.command)), None)


def walk(doc: str, cwd: Path, aws_env: dict) -> Walk:
    w = Walk(doc, cwd, aws_env)
    for block in console_blocks(DOC[doc]):
        for entry in block:
            if local_entry(doc, entry) is None:
                w.run(entry)
    return w


@pytest.fixture
def docs_cwd(tmp_path, example_root):
    """The scratch folder the walk-through runs in: examples/digits/ has the repository's files and
    the example model that `make example` makes (tests/fixtures/example.py)."""
    digits = tmp_path / "examples" / "digits"
    digits.mkdir(parents=True)
    for source in (REPO / "examples" / "digits").iterdir():
        if source.name not in ("model", "model.tar.gz", "__pycache__"):
            (digits / source.name).symlink_to(source)
    for name in ("model", "model.tar.gz"):
        (digits / name).symlink_to(example_root / "examples" / "digits" / name)
    return tmp_path


MOTO = {"deploy.md": "transform_moto", "transform.md": "transform_moto", "migration.md": "migrate_aws",
        "multi-model.md": "mme_moto"}   # the moto extension each doc's walk-through needs (tests/fixtures)


@pytest.mark.parametrize("doc", list(MOTO))
def test_walkthrough_against_moto(doc, request, docs_cwd):
    aws_env = request.getfixturevalue(MOTO[doc])
    w = walk(doc, docs_cwd, aws_env)
    print(f"{doc}: " + ", ".join(f"line {line} {sec:.1f} s" for line, sec in w.seconds))
    if os.environ.get("DOCS_WALKTHROUGH_WRITE") == "1" and w.rewrites:
        rewrite(DOC[doc], w.rewrites)
    assert not w.failures, f"{len(w.failures)} of {len(w.ran)} documented commands do not hold:\n\n" + \
        "\n\n".join(w.failures)
    assert len(w.ran) >= 5


def test_every_console_line_is_run():
    """Each `$ ` line of the four docs is run by the walk-through above or named in LOCAL (whose
    patterns must each match a line: a stale entry fails too)."""
    for doc in DOC:
        used = set()
        for block in console_blocks(DOC[doc]):
            for entry in block:
                test = local_entry(doc, entry)
                if test is not None:
                    used.update(p for p in LOCAL[doc] if re.fullmatch(p, entry.command))
        assert used == set(LOCAL[doc]), f"{doc}: LOCAL entries that match no line: {set(LOCAL[doc]) - used}"
        for test in LOCAL[doc].values():
            path, _, name = test.partition("::")
            assert f"def {name}(" in (REPO / path).read_text(), f"{doc}: LOCAL names {test}, which does not exist"


# --- the lines that need the amd64 image ------------------------------------------------------

# On top of NORMALIZE, for what a real container prints: its name, the temporary folders, the port
# (the test publishes a free one: other sessions may hold the doc's), the image's tag, log
# timestamps, and decimal numbers (timings, rates, costs, and the model's probabilities, whose last
# digits vary with the machine; the class must still be 7, checked below); a `progress:` line's
# numbers all (how far the run was when it printed depends on timing).
LOCAL_NORMALIZE = [
    (re.compile(r"deploy-local-[0-9a-f]{8}"), "deploy-local-<id>"),
    (re.compile(r"/tmp/[\w.-]+"), "<tmp>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"sagemaker-tf-graviton:[\w.-]+"), "<image>"),
    (re.compile(r"\[\d{4}-\d{2}-\d{2} [\d:]+ \+0000\] \[\d+\]"), "[<time>] [<pid>]"),
    (re.compile(r"^(progress:).*$"), r"\1 <numbers>"),
    (re.compile(r"\d[\d,]* records/s"), "<n> records/s"),
    (re.compile(r"(?<![\w.])\d[\d,]*\.\d+(?:e-?\d+)?(?![\d.])|(?<![\w.])\d+(?:\.\d+)?e-?\d+"), "<x>"),
]


def local_normalized(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in LOCAL_NORMALIZE:
            line = pattern.sub(replacement, line)
        out.append(line)
    return out


def local_lines() -> list[Entry]:
    """The LOCAL lines of the docs in the order they run here: transform.md's first (it makes the
    input), then deploy.md's."""
    return [entry for doc in ("transform.md", "deploy.md") for block in console_blocks(DOC[doc]) for entry in block
            if LOCAL[doc] and local_entry(doc, entry) == LOCAL_TEST]


def local_argv(command: str, image: str) -> tuple[list[str], dict[str, str]]:
    """The doc's command with the session's image and a free port; and what to put back in its
    output so that it reads as the doc's command would print it (real image -> documented, ...)."""
    from tests.fixtures.server import free_port

    argv = argv_of(command)
    documented_image = argv[argv.index("--image") + 1]
    argv[argv.index("--image") + 1] = image
    port = str(free_port())
    if "--port" in argv:
        documented_port = argv[argv.index("--port") + 1]
        argv[argv.index("--port") + 1] = port
    else:
        documented_port = "8080"
        argv += ["--port", port]
    return argv, {image: documented_image, f"127.0.0.1:{port}": f"127.0.0.1:{documented_port}"}


@pytest.mark.container
def test_local_lines_with_the_amd64_image(image_amd64, docs_cwd, monkeypatch):
    """Every `deploy local` / `deploy transform --local` line of deploy.md and transform.md, and
    the shell lines around them, run with the session's amd64 image in one folder; a command two
    docs show is run once and checked against both."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    w = Walk("local", docs_cwd, {})
    outputs: dict[str, tuple[int, list[str]]] = {}
    for entry in local_lines():
        if entry.command not in outputs:
            started = time.monotonic()
            if entry.command.startswith("deploy "):
                argv, back = local_argv(entry.command, image_amd64)
                code, lines = w.deploy(argv)
                for real, documented in back.items():
                    lines = [line.replace(real, documented) for line in lines]
                outputs[entry.command] = code, lines
            else:
                outputs[entry.command] = w.shell(entry.command)
            w.seconds.append((entry.line, time.monotonic() - started))
        code, lines = outputs[entry.command]
        if "--invoke" in entry.command:
            import json
            answer = json.loads(lines[-1])["predictions"][0]
            assert max(range(10), key=answer.__getitem__) == 7, lines[-1]
        expected_code = entry.code if entry.code is not None else (
            0 if not entry.out or not entry.out[-1].startswith("deploy: error:") else code or -1)
        if entry.command.startswith("deploy ") and any(line.startswith("FAILED ") for line in entry.out):
            expected_code = entry.code if entry.code is not None else 1
        problems = [] if code == expected_code else [f"exit {code}, the doc says {expected_code}"]
        if entry.out:
            diff = mismatch(local_normalized(entry.out), local_normalized(lines))
            if diff:
                problems.append(f"output differs from the doc:\n{diff}")
                w.rewrites.append((entry, shown(entry.out, lines)))
        if problems:
            w.failures.append(f"{entry.doc}:{entry.line}: `{entry.command}`: " + "\n".join(problems)
                              + "\n--- its output:\n" + "\n".join(lines))
        w.ran.append(entry)
    print("local: " + ", ".join(f"line {line} {sec:.1f} s" for line, sec in w.seconds))
    if os.environ.get("DOCS_WALKTHROUGH_WRITE") == "1":
        for doc in ("transform.md", "deploy.md"):
            mine = [r for r in w.rewrites if r[0].doc == doc]
            if mine:
                rewrite(DOC[doc], mine)
    assert not w.failures, f"{len(w.failures)} of {len(w.ran)} documented local lines do not hold:\n\n" + \
        "\n\n".join(w.failures)
    assert len(w.ran) >= 8


@pytest.mark.parametrize("text, expected, ok", [
    ("digits-20261207-031500-123: InService (0m03s)", ["digits-20261126-215259-845: InService (0m00s)"], True),
    ("wrote model.tar.gz (0.4 MB, 7 entries: 1)", ["wrote model.tar.gz (0.3 MB, 7 entries: 1)"], True),
    ("created      2026-12-07 03:15 UTC", ["created      2026-11-26 21:53 UTC"], True),
    ("a\nb\nc", ["a", "...", "c"], True),
    ("a\nc", ["a", "...", "c"], True),
    ("a\nb", ["a", "...", "c"], False),
    ('    "size": 294375,', ['    "size": 294517,'], True),
    ("model.tar.gz\t294037\t2026-12-07T03:28:29+00:00", ["model.tar.gz\t294233\t2026-12-01T20:35:51+00:00"], True),
    ("endpoint digits-2", ["endpoint digits-3"], False),
    ("deleted endpoint digits", ["deleted endpoint digit"], False),
    ("1 x ml.c7g.xlarge", ["1 x ml.c7g.2xlarge"], False),
])
def test_normalization_matches_what_it_should_and_no_more(text, expected, ok):
    assert (mismatch(expected, text.split("\n")) is None) == ok
