"""`deploy transform --engine async`.

- Locally, against the real amd64 image: the same input gives byte-identical outputs on both
  engines, for the MLP (100,000 CSV rows) and the digits CNN (JSON Lines). One run per engine per
  model (the container starts once per run).
- On AWS, against moto (tests/fixtures/moto.py): the endpoint with auto scaling from zero, requests
  staged and invoked, outputs assembled, everything removed at the end; a signal in each phase
  (before the endpoint, while it is Creating, while requests are out), --on-interrupt keep and
  --timeout, each checked for what is left. moto's own InvokeEndpointAsync answers every request
  with {"default": "response"}; the answers of a real container through the async runtime are the
  local tests' (and the moto tests' once issue 24's fixture runs async invokes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.server import free_port



DEPLOY = str(Path(sys.executable).with_name("deploy"))


def run_local(img, model, tmp_path, engine, *extra, timeout=900):
    out = tmp_path / f"out-{engine}"
    proc = subprocess.run([DEPLOY, "transform", "--local", "--engine", engine, "--image", img,
                           "--model-data", str(model), "--input", str(tmp_path / "in"), "--output", str(out),
                           "--port", str(free_port()), "--format", "json", *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout), proc.stderr, out


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.container
def test_mlp_100k_csv_rows_byte_identical_on_both_engines(image_amd64, tmp_path, mlp_model_dir):
    rng = np.random.default_rng(25)
    for i, n in enumerate((60_000, 40_000)):
        rows = rng.normal(size=(n, 4)).astype(np.float32)
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"part-{i}.csv").write_text("".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in rows))
    batch, _, out_b = run_local(image_amd64, mlp_model_dir.model_dir, tmp_path, "batch")
    async_, err, out_a = run_local(image_amd64, mlp_model_dir.model_dir, tmp_path, "async")
    assert batch["records"] == async_["records"] == 100_000
    a, b = outputs(out_a), outputs(out_b)
    assert sorted(a) == ["part-0.csv.out", "part-1.csv.out"]
    assert a == b
    assert len(a["part-0.csv.out"].splitlines()) == 60_000
    assert async_["engine"] == "async" and batch["engine"] == "batch"
    assert "staging requests in" in err and "removed" in err


@pytest.mark.container
def test_digits_jsonlines_byte_identical_on_both_engines(image_amd64, tmp_path, example_root):
    from sklearn.datasets import load_digits
    images = (load_digits().images / 16.0).reshape(-1, 8, 8, 1)
    (tmp_path / "in").mkdir()
    for i, part in enumerate((images[:1000], images[1000:])):
        (tmp_path / "in" / f"part-{i}.jsonl").write_text(
            "".join(json.dumps(img.tolist(), separators=(",", ":")) + "\n" for img in part))
    model = example_root / "examples" / "digits" / "model.tar.gz"
    extra = ("--content-type", "application/jsonlines", "--join-source", "Input")
    batch, _, out_b = run_local(image_amd64, model, tmp_path, "batch", *extra)
    async_, _, out_a = run_local(image_amd64, model, tmp_path, "async", *extra)
    a, b = outputs(out_a), outputs(out_b)
    assert a == b and sorted(a) == ["part-0.jsonl.out", "part-1.jsonl.out"]
    first = json.loads(a["part-0.jsonl.out"].splitlines()[0])
    assert len(first["SageMakerOutput"]) == 10 and first["SageMakerInput"] == images[0].tolist()


# --- on AWS, against moto -------------------------------------------------------------------------

def put_csv(files: dict[str, bytes]):
    import boto3
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="batch-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key, body in files.items():
        s3.put_object(Bucket="batch-data", Key=f"in/{key}", Body=body)


def mlp_csv(rows: int, seed: int, bad: dict[int, str] | None = None) -> bytes:
    values = np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)
    lines = [",".join(f"{v:.6f}" for v in row) for row in values]
    for index, text in (bad or {}).items():
        lines[index] = text
    return ("\n".join(lines) + "\n").encode()


def left_in_aws():
    """What a run may leave: endpoints, configs, models, scaling targets, alarms, staged objects."""
    import boto3
    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    staged = [f"s3://{b['Name']}/{o['Key']}" for b in s3.list_buckets()["Buckets"]
              if b["Name"].startswith("sagemaker-eu-west-1")
              for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []) if "/async/" in o["Key"]]
    return {"endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
            "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
            "models": [m["ModelName"] for m in sm.list_models()["Models"]],
            "scaling": boto3.client("application-autoscaling").describe_scalable_targets(
                ServiceNamespace="sagemaker")["ScalableTargets"],
            "alarms": [a["AlarmName"] for a in boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]],
            "staged": staged}


NOTHING = {"endpoints": [], "configs": [], "models": [], "scaling": [], "alarms": [], "staged": []}


def async_args(env, ecr_images, model_tgz, name, *extra):
    return ("transform", "--engine", "async", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
            "--role", env["role"], "--input", "s3://batch-data/in/", "--output", "s3://batch-data/out/",
            "--name", name, *extra)          # --engine async: ml.c7g.4xlarge by default


def s3_outputs() -> dict[str, bytes]:
    import boto3
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="batch-data", Prefix="out/").get("Contents", [])]
    return {k[len("out/"):]: s3.get_object(Bucket="batch-data", Key=k)["Body"].read() for k in keys}


@pytest.mark.deploy
def test_async_on_moto_gives_batchs_bytes_and_removes_everything(capsys, async_moto, ecr_images, model_tgz,
                                                                  mlp_server, tmp_path):
    """The endpoint's requests run against the host server (tests/fixtures/moto_async.py); the batch
    engine's loop runs against the same server on the same files: the outputs and the failures
    are the same, byte for byte."""
    from sagemaker_tf_deploy.commands.main import main
    from sagemaker_tf_deploy.local import transform as tl
    from tests.fixtures import moto_async as ma
    files = {"part-0.csv": mlp_csv(3000, 1), "sub/part-1.csv": mlp_csv(500, 2),
             "bad.csv": mlp_csv(200, 3, bad={41: "1,2,oops,4"})}
    put_csv(files)
    ma.route_async("scoring", mlp_server.url)
    code = main(list(async_args(async_moto, ecr_images, model_tgz, "scoring", "--max-instances", "3",
                                "--max-payload-mb", "1", "--join-source", "Input", "--poll", "0.05",
                                "--format", "json")))
    out, err = capsys.readouterr()
    assert code == 1, err                                  # bad.csv:42 failed
    doc = json.loads(out)
    assert doc["engine"] == "async" and doc["records"] == 3700 and doc["failed"] == 1
    assert [(f["file"], f["line"]) for f in doc["failures"]] == [("bad.csv", 42)]
    # a failure object has no status (halved as a 500), and is named with the container's message
    assert "FAILED bad.csv:42: async failure: " in err
    assert "0..3 instances, target 5 queued requests per instance; from zero on alarm" in err
    assert "ml.c7g.4xlarge is arm64: ok" in err            # the async engine's default type is Graviton
    got = s3_outputs()
    assert sorted(got) == ["part-0.csv.out", "sub/part-1.csv.out"]
    # the same files through the batch engine's loop, against the same server
    for name, body in files.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(body)
    spec = tl.LocalTransformSpec(image="-", model_data="-", input=tmp_path / "in", output=tmp_path / "out",
                                 join_source="Input")
    batch = tl.transform_files(mlp_server.url, spec, {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1,
                                                      "MaxConcurrentTransforms": 4}, quiet=True)
    assert [(f, line) for f, line, _ in batch.failures] == [("bad.csv", 42)]
    assert got == {n: (tmp_path / "out" / n).read_bytes() for n in got}
    assert {i["inference_id"].rsplit("-", 1)[0] for i in ma.ASYNC_INVOCATIONS} == {"scoring"}
    ma.wait_async_idle()
    assert left_in_aws() == NOTHING, err


@pytest.mark.deploy
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_async_signal_before_the_endpoint_exists_undoes_the_run(async_moto, ecr_images, model_tgz, sig):
    from tests.deploy.test_deploy_interrupts import CODES, Deploy
    from tests.fixtures.moto import gate_operation
    put_csv({"a.csv": mlp_csv(10, 4)})
    with gate_operation("create_endpoint_config") as gate:
        run = Deploy(*async_args(async_moto, ecr_images, model_tgz, "early", "--poll", "0.05",
                                 "--on-interrupt", "keep"))
        assert gate["entered"].wait(60), run.err
        run.signal(sig)
        run.wait_for("rollback complete")
        gate["fail"] = True                           # the call in flight when the signal came fails
    code, out, err = run.finish()
    assert code == CODES[sig], err
    assert "deleting what this run created" in err
    assert left_in_aws() == NOTHING, err
    assert s3_outputs() == {} and "Traceback" not in err


@pytest.mark.deploy
def test_async_signal_while_the_endpoint_is_creating_waits_and_deletes_it(async_moto, ecr_images, model_tgz):
    from tests.deploy.test_deploy_interrupts import Deploy
    from tests.fixtures.moto import endpoint_state, hold_endpoint, release_endpoint
    put_csv({"a.csv": mlp_csv(10, 5)})
    hold_endpoint("creating", "Creating")
    run = Deploy(*async_args(async_moto, ecr_images, model_tgz, "creating", "--poll", "0.05"))
    run.wait_for("creating: Creating")
    run.signal("SIGHUP")
    run.wait_for("SageMaker cannot delete endpoint creating while it is Creating")
    assert endpoint_state("creating")["status"] == "Creating"
    release_endpoint("creating", "InService")
    code, out, err = run.finish()
    assert code == 129, err
    assert left_in_aws() == NOTHING, err


def _interrupt_while_out(async_moto, ecr_images, model_tgz, mlp_server, name, sig, *extra):
    """A run whose requests SageMaker holds in its queue (hold_async) gets SIG once they are out;
    returns (exit code, stderr, what is left) as seen before the queue lets go."""
    from tests.deploy.test_deploy_interrupts import Deploy
    from tests.fixtures import moto_async as ma
    put_csv({"a.csv": mlp_csv(40, 6), "b.csv": mlp_csv(40, 7)})
    ma.route_async(name, mlp_server.url)
    with ma.hold_async():
        run = Deploy(*async_args(async_moto, ecr_images, model_tgz, name, "--poll", "0.05",
                                 "--strategy", "SingleRecord", "--max-in-flight", "4", *extra))
        run.wait_for("from zero on alarm")
        deadline = time.monotonic() + 30
        while len(ma.ASYNC_INVOCATIONS) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ma.ASYNC_INVOCATIONS) == 4, run.err            # the bound: 4 out, none answered
        run.signal(sig)
        code, out, err = run.finish()
        left = left_in_aws()
    return code, err, left


@pytest.mark.deploy
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_async_signal_while_requests_are_out_cancels_and_removes_everything(async_moto, ecr_images, model_tgz,
                                                                            mlp_server, sig):
    from tests.deploy.test_deploy_interrupts import CODES
    code, err, left = _interrupt_while_out(async_moto, ecr_images, model_tgz, mlp_server, "out", sig)
    assert code == CODES[sig], err
    assert f"transform interrupted by {sig}; deleting what this run created" in err
    assert "deleted CloudWatch alarm out-AllTraffic-has-backlog-without-capacity" in err
    assert left == NOTHING, err
    assert s3_outputs() == {}                                     # no half file


@pytest.mark.deploy
def test_async_keep_on_interrupt_leaves_the_endpoint_scaled_to_zero_and_names_it(async_moto, ecr_images,
                                                                                 model_tgz, mlp_server):
    code, err, left = _interrupt_while_out(async_moto, ecr_images, model_tgz, mlp_server, "kept", "SIGINT",
                                           "--on-interrupt", "keep")
    assert code == 130, err
    assert "keeping what exists (--on-interrupt keep)" in err
    assert "remove them:  deploy delete kept; aws s3 rm --recursive s3://sagemaker-eu-west-1-123456789012/kept/async/" in err
    assert left["endpoints"] == ["kept"] and left["alarms"] == ["kept-AllTraffic-has-backlog-without-capacity"]
    assert left["scaling"][0]["MinCapacity"] == 0 and left["staged"]


@pytest.mark.deploy
def test_async_timeout_while_requests_are_out_rolls_back_and_exits_1(capsys, async_moto, ecr_images, model_tgz):
    from sagemaker_tf_deploy.commands.main import main
    from tests.fixtures import moto_async as ma
    put_csv({"a.csv": mlp_csv(10, 8)})
    with ma.hold_async():
        code = main(list(async_args(async_moto, ecr_images, model_tgz, "slow", "--poll", "0.05", "--timeout", "3")))
        out, err = capsys.readouterr()
        left = left_in_aws()
    assert code == 1, err
    assert "not done after 3 s (--timeout)" in err and "rollback complete" in err
    assert left == NOTHING, err


@pytest.mark.deploy
def test_async_on_moto_json_lines_match_the_batch_engine(capsys, async_moto, ecr_images, model_tgz, mlp_server,
                                                         tmp_path):
    """JSON Lines in, JSON Lines out, joined with the input (SageMaker's JSON join): the same bytes
    from the async engine on moto and from the batch engine's loop, against the same server."""
    from sagemaker_tf_deploy.commands.main import main
    from sagemaker_tf_deploy.local import transform as tl
    from tests.fixtures import moto_async as ma
    rows = np.random.default_rng(9).normal(size=(800, 4)).astype(np.float32)
    features = "".join(json.dumps([round(float(v), 6) for v in r]) + "\n" for r in rows).encode()
    put_csv({"rows.jsonl": features})
    ma.route_async("lines", mlp_server.url)
    code = main(list(async_args(async_moto, ecr_images, model_tgz, "lines", "--content-type", "application/jsonlines",
                                "--join-source", "Input", "--poll", "0.05")))
    out, err = capsys.readouterr()
    assert code == 0, err
    got = s3_outputs()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.jsonl").write_bytes(features)
    spec = tl.LocalTransformSpec(image="-", model_data="-", input=tmp_path / "in", output=tmp_path / "out",
                                 content_type="application/jsonlines", join_source="Input")
    tl.transform_files(mlp_server.url, spec, {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6,
                                              "MaxConcurrentTransforms": 4}, quiet=True)
    assert got == {"rows.jsonl.out": (tmp_path / "out" / "rows.jsonl.out").read_bytes()}
    first = json.loads(got["rows.jsonl.out"].splitlines()[0])
    assert first["SageMakerInput"] == json.loads(features.splitlines()[0]) and len(first["SageMakerOutput"]) == 3
