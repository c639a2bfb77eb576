"""Issue 16: the interruption rule, with real signals sent to a real `deploy` process.

The installed `deploy` command runs as a subprocess against the in-process moto server
(tests/fixtures/moto.py), which holds an endpoint Creating or Updating for as long as a test
needs (`hold_endpoint` / `release_endpoint`) and blocks an operation mid-call (`gate_operation`).
Each test sends SIGINT, SIGTERM or SIGHUP at a known phase, in the foreground or to a background
job of a shell (which starts with SIGINT ignored), and then checks what is left in moto.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.moto import client, endpoint_state, gate_operation, hold_endpoint, release_endpoint
from tests.unit.test_deploy_endpoint import state

pytestmark = pytest.mark.deploy

DEPLOY = str(Path(sys.executable).with_name("deploy"))
EMPTY = {"endpoints": [], "configs": [], "models": [], "objects": []}
CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
# A runner started under nohup ignores SIGHUP, and a child inherits that (deploy keeps nohup's
# choice on purpose): a SIGHUP test would then wait for an exit that never comes. The processes
# under test start with SIGHUP at its default, so the signal sent is one they really handle.
HANGUP_IGNORED_HERE = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def _handle_hangup() -> None:  # in the child, before exec
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Deploy:
    """A running `deploy` process whose stderr is collected line by line."""

    def __init__(self, *argv: str, background: bool = False):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        args = [DEPLOY, *argv]
        if background:
            # a non-interactive shell starts `cmd &` with SIGINT and SIGQUIT ignored
            script = 'exec 3>&2; "$@" 2>&3 & echo $! >&2; wait $!; exit $?'
            self.proc = subprocess.Popen(["bash", "-c", script, "bash", *args], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                                         preexec_fn=_handle_hangup)
            self.pid = int(self.proc.stderr.readline())
        else:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env=dict(os.environ), preexec_fn=_handle_hangup)
            self.pid = self.proc.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    @property
    def err(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(text in line for line in self.lines):
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(f"exited ({self.proc.returncode}) before {text!r}:\n{''.join(self.lines)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(self.lines)}")
                self.cond.wait(0.2)

    def signal(self, name: str) -> None:
        if name == "SIGHUP" and HANGUP_IGNORED_HERE:
            print("this environment ignores SIGHUP (nohup): the deploy under test was started with it restored")
        os.kill(self.pid, getattr(signal, name))

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out = self.proc.stdout.read()
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(timeout=10)
        return code, out, self.err


def create_args(aws_env, image, model, name, *extra):
    return ("create", "--image", image, "--model-data", str(model), "--role", aws_env["role"],
            "--name", name, "--poll", "0.05", *extra)


def sm():
    return client("sagemaker")


# --- create ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig,background", [("SIGINT", False), ("SIGTERM", False), ("SIGHUP", False),
                                            ("SIGINT", True), ("SIGTERM", True)])
def test_signal_while_creating_rolls_back(aws_env, ecr_images, model_tgz, sig, background):  # noqa: F811
    """Default --on-interrupt rollback: SageMaker cannot delete a Creating endpoint, so the command
    waits until it can, deletes it and everything else, and exits 128+signal."""
    hold_endpoint("held", "Creating")
    run = Deploy(*create_args(aws_env, ecr_images["multi"], model_tgz, "held"), background=background)
    run.wait_for("held: Creating")
    run.signal(sig)
    run.wait_for("SageMaker cannot delete endpoint held while it is Creating")
    assert endpoint_state("held")["status"] == "Creating"        # nothing deleted it behind our back
    release_endpoint("held", "InService")
    code, out, err = run.finish()
    assert code == CODES[sig], err
    assert f"create interrupted by {sig}; deleting what this run created" in err
    assert "rolled back: deleted endpoint held" in err
    assert "rollback complete: nothing from this run is left" in err
    assert f"deploy: interrupted by {sig}" in err
    assert "Traceback" not in err
    assert state() == EMPTY


def test_background_job_really_starts_with_sigint_ignored():
    """The premise of the background cases above: bash gives `cmd &` an ignored SIGINT."""
    proc = subprocess.Popen(["bash", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep" and \
                time.monotonic() < deadline:
            time.sleep(0.01)      # bash forks, sets the dispositions, then execs sleep
        sigign = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("SigIgn"))
        assert int(sigign.split()[1], 16) & (1 << (signal.SIGINT - 1))
    finally:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.parametrize("background", [False, True])
def test_keep_leaves_the_creating_endpoint_and_says_how_to_resume(aws_env, ecr_images, model_tgz,  # noqa: F811
                                                                   background):
    hold_endpoint("kept", "Creating")
    run = Deploy(*create_args(aws_env, ecr_images["multi"], model_tgz, "kept", "--on-interrupt", "keep"),
                 background=background)
    run.wait_for("kept: Creating")
    run.signal("SIGINT")
    code, out, err = run.finish()
    assert code == 130, err
    assert "keeping what exists (--on-interrupt keep)" in err
    assert "deploy wait kept" in err and "deploy delete kept --purge-s3" in err
    s = state()
    assert s["endpoints"] == ["kept"] and len(s["configs"]) == 1 and len(s["models"]) == 1 and len(s["objects"]) == 1
    assert endpoint_state("kept")["status"] == "Creating"

    # and the commands it names do what it says: delete waits until SageMaker lets it go
    run = Deploy("delete", "kept", "--poll", "0.05", "--purge-s3")
    run.wait_for("SageMaker cannot delete endpoint kept while it is Creating")
    release_endpoint("kept", "Failed", "container failed")
    code, out, err = run.finish()
    assert code == 0, err
    assert state() == {**EMPTY, "objects": []}
    code = subprocess.run([DEPLOY, "delete", "kept"], capture_output=True, text=True).returncode
    assert code == 1
    proc = subprocess.run([DEPLOY, "delete", "kept", "--if-exists"], capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing to delete" in proc.stderr


@pytest.mark.parametrize("sig,background", [("SIGINT", False), ("SIGTERM", False), ("SIGHUP", False),
                                            ("SIGINT", True), ("SIGTERM", True)])
def test_signal_before_the_endpoint_exists_undoes_everything(aws_env, ecr_images, model_tgz,  # noqa: F811
                                                              sig, background):
    """A signal while create_endpoint_config is in flight (model and S3 object exist, no endpoint):
    undone whatever --on-interrupt says, exit 128+signal."""
    with gate_operation("create_endpoint_config") as gate:
        run = Deploy(*create_args(aws_env, ecr_images["multi"], model_tgz, "early", "--on-interrupt", "keep"),
                     background=background)
        assert gate["entered"].wait(60), run.err
        run.signal(sig)
        run.wait_for("rollback complete")
        gate["fail"] = True
    code, out, err = run.finish()
    assert code == CODES[sig], err
    assert "rolled back: deleted model early-" in err and "rolled back: deleted s3://" in err
    assert state() == EMPTY


@pytest.mark.parametrize("policy", ["rollback", "keep"])
def test_timeout_follows_the_same_rule(aws_env, ecr_images, model_tgz, policy):  # noqa: F811
    hold_endpoint("slow", "Creating")
    run = Deploy(*create_args(aws_env, ecr_images["multi"], model_tgz, "slow", "--timeout", "1",
                              "--on-interrupt", policy))
    if policy == "rollback":
        run.wait_for("SageMaker cannot delete endpoint slow while it is Creating")
        release_endpoint("slow", "InService")
    code, out, err = run.finish()
    assert code == 1, err
    assert "create timed out: endpoint slow still Creating after" in err
    if policy == "rollback":
        assert state() == EMPTY
    else:
        assert state()["endpoints"] == ["slow"] and "deploy wait slow" in err


def test_second_signal_stops_the_rollback_wait_and_says_what_is_left(aws_env, ecr_images, model_tgz):  # noqa: F811
    hold_endpoint("stuck", "Creating")
    run = Deploy(*create_args(aws_env, ecr_images["multi"], model_tgz, "stuck"))
    run.wait_for("stuck: Creating")
    run.signal("SIGINT")
    run.wait_for("SageMaker cannot delete endpoint stuck while it is Creating")
    run.signal("SIGINT")
    code, out, err = run.finish()
    assert code == 130, err
    assert "SIGINT received while cleaning up" in err
    assert "still there: endpoint stuck" in err and "deploy delete stuck --purge-s3" in err
    # the rest of the run is gone; only the endpoint (which SageMaker would not delete yet) stays
    s = state()
    assert s["endpoints"] == ["stuck"] and s["models"] == [] and s["objects"] == []


# --- update ------------------------------------------------------------------------------------

def _created(aws_env, ecr_images, model_tgz, name):  # noqa: F811
    proc = subprocess.run([DEPLOY, *create_args(aws_env, ecr_images["multi"], model_tgz, name)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return state(), sm().describe_endpoint(EndpointName=name)["EndpointConfigName"]


def update_args(name, *extra):
    return ("update", name, "--instance-type", "ml.c7g.2xlarge", "--poll", "0.05", *extra)


@pytest.mark.parametrize("sig,background", [("SIGINT", False), ("SIGHUP", False), ("SIGINT", True),
                                            ("SIGTERM", True)])
def test_update_interrupted_while_updating_keep(aws_env, ecr_images, model_tgz, sig, background):  # noqa: F811
    """--on-interrupt keep while Updating: nothing is deleted, the live config is named, and
    status/delete work afterwards (the old dead end: both failed on a missing config)."""
    old, old_config = _created(aws_env, ecr_images, model_tgz, "web")
    hold_endpoint("web", "Updating")
    run = Deploy(*update_args("web", "--on-interrupt", "keep"), background=background)
    run.wait_for("web: Updating")
    run.signal(sig)
    code, out, err = run.finish()
    assert code == CODES[sig], err
    assert "keeping everything, nothing was deleted" in err
    assert f"live config:  {old_config}" in err
    s = state()
    assert len(s["configs"]) == 2 and len(s["models"]) == 2      # old and new, both kept
    release_endpoint("web", "InService")                          # SageMaker finishes on its own
    proc = subprocess.run([DEPLOY, "status", "web", "--output", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json
    doc = json.loads(proc.stdout)
    assert doc["endpoint"]["EndpointConfigName"] != old_config
    assert doc["config"]["ProductionVariants"][0]["InstanceType"] == "ml.c7g.2xlarge"
    proc = subprocess.run([DEPLOY, "delete", "web", "--poll", "0.05", "--purge-s3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"deleted unused endpoint config {old_config}" in proc.stderr
    assert state() == EMPTY


@pytest.mark.parametrize("outcome,sig,background", [("RolledBack", "SIGTERM", False), ("InService", "SIGTERM", False),
                                                    ("InService", "SIGINT", True), ("RolledBack", "SIGHUP", False)])
def test_update_interrupted_while_updating_rollback(aws_env, ecr_images, model_tgz, outcome, sig,  # noqa: F811
                                                    background):
    """Default rollback while Updating: SageMaker cannot cancel, so the command waits. If the
    endpoint settles on the old config the new model/config go; if the update took, it reverts
    to the old config first. Either way the endpoint ends where it was, on the old config."""
    old, old_config = _created(aws_env, ecr_images, model_tgz, "web")
    hold_endpoint("web", "Updating")
    run = Deploy(*update_args("web"), background=background)
    run.wait_for("web: Updating")
    run.signal(sig)
    run.wait_for("SageMaker cannot cancel an update")
    assert endpoint_state("web") == {"status": "Updating", "config": old_config}
    release_endpoint("web", outcome, "new fleet failed its health check")
    code, out, err = run.finish()
    assert code == CODES[sig], err
    if outcome == "InService":
        assert f"reverting web to {old_config}" in err
    assert f"rollback complete: endpoint web is on {old_config}" in err
    assert endpoint_state("web") == {"status": "InService", "config": old_config}
    assert state() == old


@pytest.mark.parametrize("sig,background", [("SIGHUP", False), ("SIGINT", True), ("SIGTERM", False)])
def test_update_signal_before_update_endpoint_deletes_only_the_new(aws_env, ecr_images, model_tgz,  # noqa: F811
                                                                    sig, background):
    old, old_config = _created(aws_env, ecr_images, model_tgz, "web")
    with gate_operation("create_endpoint_config") as gate:
        run = Deploy(*update_args("web", "--on-interrupt", "keep"), background=background)
        assert gate["entered"].wait(60), run.err
        run.signal(sig)
        run.wait_for("rollback complete")
        gate["fail"] = True
    code, out, err = run.finish()
    assert code == CODES[sig], err
    assert f"before update_endpoint was sent: the endpoint stays on {old_config}" in err
    assert state() == old


def test_failed_update_with_unknown_outcome_keeps_everything(aws_env, ecr_images, model_tgz):  # noqa: F811
    """A wait that fails while Updating (here: a timeout with keep) must not delete the new config."""
    old, old_config = _created(aws_env, ecr_images, model_tgz, "web")
    hold_endpoint("web", "Updating")
    proc = subprocess.run([DEPLOY, *update_args("web", "--timeout", "1", "--on-interrupt", "keep")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "update timed out" in proc.stderr and "keeping everything" in proc.stderr
    assert len(state()["configs"]) == 2
    release_endpoint("web", "InService")
    new_config = sm().describe_endpoint(EndpointName="web")["EndpointConfigName"]
    sm().describe_endpoint_config(EndpointConfigName=new_config)       # the live config exists


# --- the shared pieces, in process --------------------------------------------------------------

def test_handle_signals_raises_interrupted_with_the_exit_code_and_restores():
    from sagemaker_tf_deploy.core import interrupts

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted) as exc:
        with interrupts.handle_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert exc.value.exit_code == 143 and str(exc.value) == "interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_handle_signals_overrides_an_ignored_sigint_but_keeps_nohup():
    from sagemaker_tf_deploy.core import interrupts

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupts.handle_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN       # nohup's choice stays
            with pytest.raises(interrupts.Interrupted) as exc:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            assert exc.value.exit_code == 130
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGHUP, old_hup)


def test_shielded_records_instead_of_raising():
    from sagemaker_tf_deploy.core import interrupts

    said = []
    with interrupts.handle_signals():
        with interrupts.shielded(said.append) as shield:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            finished = True
    assert finished and shield.received == [signal.SIGTERM] and "finishing the cleanup first" in said[0]


def test_output_json_and_text_rendering():
    import datetime as dt
    import io
    import json

    from sagemaker_tf_deploy.core import output

    doc = {"ResponseMetadata": {"RequestId": "x"}, "When": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
           "Items": [{"A": 1, "ResponseMetadata": {}}], "Naive": dt.datetime(2026, 1, 2), "Raw": b"hi"}
    out = json.loads(output.to_json(doc))
    assert out == {"When": "2026-01-02T03:04:05+00:00", "Items": [{"A": 1}], "Naive": "2026-01-02T00:00:00+00:00",
                   "Raw": "hi"}
    assert output.text_lines([{"a": 1, "b": None}, {"a": 2, "b": "x\ty"}]) == ["1\tNone", "2\tx y"]
    assert output.text_lines({"e": {"s": "InService", "v": [{"n": "A"}]}}) == ["e.s\tInService", "e.v.0.n\tA"]
    buf = io.StringIO()
    output.emit({"k": "v"}, "table", table=lambda r: [f"k is {r['k']}"], stream=buf)
    assert buf.getvalue() == "k is v\n"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_read_only_commands_just_stop(aws_env, ecr_images, model_tgz, sig):  # noqa: F811
    """`deploy wait` (or list/status) changes nothing: a signal ends it at once, 128+signal, no traceback."""
    hold_endpoint("waited", "Creating")
    proc = subprocess.run([DEPLOY, *create_args(aws_env, ecr_images["multi"], model_tgz, "waited", "--no-wait")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = Deploy("wait", "waited", "--poll", "0.05")
    run.wait_for("waited: Creating")
    run.signal(sig)
    code, out, err = run.finish()
    assert code == CODES[sig] and f"deploy: interrupted by {sig}" in err and "Traceback" not in err
    assert endpoint_state("waited")["status"] == "Creating"
