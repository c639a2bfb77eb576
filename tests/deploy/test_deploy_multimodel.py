"""Multi-model endpoints in `deploy` (issue 12): create --multi-model, invoke --target-model,
models add/list against moto (tests/fixtures/moto_mme.py); the local proxy of
`deploy local --multi-model` against a stand-in container (fast, exact LRU checks) and against
the real amd64 image (two archives loaded on first use, a 507 that makes it unload).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests

from sagemaker_tf_deploy.core import target_models
from sagemaker_tf_deploy.local import multimodel as local_multimodel
from sagemaker_tf_deploy.operations import multimodel
from sagemaker_tf_deploy.commands.main import main
from tests.fixtures import moto_mme
from tests.fixtures.moto import fail_operation
from tests.fixtures.report import report
from tests.fixtures.server import free_port

pytestmark = pytest.mark.deploy

DEPLOY = str(Path(sys.executable).with_name("deploy"))
BUCKET = "mme-models"
PREFIX = f"s3://{BUCKET}/digits/"


def run(capsys, *argv):
    code = main([*argv, "--poll", "0.05"] if argv[0] in ("create", "delete") else list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fake_model(root: Path) -> Path:
    """A folder in the server's layout (not a real SavedModel: moto and the stand-in never load it)."""
    (root / "1" / "variables").mkdir(parents=True)
    (root / "1" / "saved_model.pb").write_bytes(b"\x08\x01fake")
    (root / "1" / "variables" / "variables.index").write_bytes(b"idx")
    return root


def tgz(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, child.name)
    return out


@pytest.fixture
def archives(tmp_path):
    src = fake_model(tmp_path / "src")
    out = tmp_path / "archives"
    out.mkdir()
    for name in ("a", "b", "c"):
        tgz(src, out / f"{name}.tar.gz")
    return out


def s3_objects():
    s3 = boto3.client("s3")
    found = []
    for b in s3.list_buckets()["Buckets"]:
        found += [f"s3://{b['Name']}/{o['Key']}" for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
    return sorted(found)


@pytest.fixture
def prefix(mme_moto, archives):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": mme_moto["region"]})
    s3.upload_file(str(archives / "a.tar.gz"), BUCKET, "digits/a.tar.gz")
    return PREFIX


def create_mme(capsys, env, image, *extra, model_data=PREFIX):
    return run(capsys, "create", "--multi-model", "--image", image, "--model-data", model_data,
               "--role", env["role"], "--name", "digits-mme", *extra)


# --- moto: create / invoke / models add, list ---------------------------------------------------

def test_create_multi_model_makes_a_multimodel_model(capsys, mme_moto, ecr_images, prefix):
    before = s3_objects()
    code, out, err = create_mme(capsys, mme_moto, ecr_images["multi"], "--env", "MY_VAR=1", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "MultiModel" and doc["model_data"] == PREFIX and doc["status"] == "InService"
    sm = boto3.client("sagemaker")
    model = sm.describe_model(ModelName=doc["model"])
    c = model["PrimaryContainer"]
    assert c["Mode"] == "MultiModel" and c["ModelDataUrl"] == PREFIX and c["Image"] == ecr_images["multi"]
    assert c["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true" and c["Environment"]["MY_VAR"] == "1"
    assert "SAGEMAKER_PROGRAM" not in c["Environment"]       # each archive brings its own code
    cfg = sm.describe_endpoint_config(EndpointConfigName=doc["endpoint_config"])
    assert cfg["ProductionVariants"][0]["InstanceType"] == "ml.c7g.xlarge"
    assert sm.describe_endpoint(EndpointName="digits-mme")["EndpointStatus"] == "InService"
    assert s3_objects() == before                             # create uploads nothing
    assert "1 archive(s) there now" in err
    # a prefix without the trailing slash gets one
    code, out, err = run(capsys, "create", "--multi-model", "--image", ecr_images["multi"], "--model-data",
                         f"s3://{BUCKET}/digits", "--role", mme_moto["role"], "--name", "other", "--output", "json")
    assert code == 0, err
    assert sm.describe_model(ModelName=json.loads(out)["model"])["PrimaryContainer"]["ModelDataUrl"] == PREFIX


def test_create_multi_model_local_checks_come_first(capsys, mme_moto, ecr_images, prefix, aws_calls):
    image = ecr_images["multi"]
    for extra, model_data, needle in (
            ((), f"{PREFIX}a.tar.gz", "names one archive"),
            ((), "model.tar.gz", "takes an S3 prefix"),
            (("--instance-type", "ml.c7g.xlargee"), PREFIX, "did you mean ml.c7g.xlarge?"),
            (("--name", "bad_name"), PREFIX, "'_'"),
            (("--bucket", "other"), PREFIX, "uploads nothing")):
        aws_calls.clear()
        code, out, err = create_mme(capsys, mme_moto, image, *extra, model_data=model_data)
        assert code == 2, (extra, err)
        assert needle in err, err
        assert aws_calls == [], aws_calls
    code, _, err = run(capsys, "create", "--multi-model", "--image", image, "--model-data", PREFIX)
    assert code == 2 and "execution role is required" in err
    code, _, err = create_mme(capsys, mme_moto, ecr_images["arm64"], "--instance-type", "ml.c5.xlarge")
    assert code == 1 and "has architectures [arm64]" in err     # as create: a read-only check, exit 1
    assert boto3.client("sagemaker").list_models()["Models"] == []


@pytest.mark.aws_newer_than_botocore(ProductionVariantInstanceType=["ml.c9g.xlarge"])
def test_create_multi_model_confirms_a_newer_type_as_create_does(capsys, mme_moto, ecr_images, prefix, aws_calls):
    """The same instance-type rule as deploy create: a type newer than the built-in list is asked
    of Service Quotas before anything is created."""
    from tests.fixtures.moto import SAGEMAKER_QUOTAS

    aws_calls.clear()
    code, _, err = create_mme(capsys, mme_moto, ecr_images["multi"], "--instance-type", "ml.c9g.xlarge")
    assert code == 2 and "Service Quotas does not list it for endpoint usage either" in err
    assert len(aws_calls) == 1 and "ServiceQuotas" in aws_calls[0]
    SAGEMAKER_QUOTAS.append("ml.c9g.xlarge")
    try:
        code, out, err = create_mme(capsys, mme_moto, ecr_images["multi"], "--instance-type", "ml.c9g.xlarge")
    finally:
        SAGEMAKER_QUOTAS.remove("ml.c9g.xlarge")
    assert code == 0 and "Service Quotas lists it for endpoints: ok" in err, err


def test_create_multi_model_failure_rolls_back_and_keeps_the_archives(capsys, mme_moto, ecr_images, prefix):
    before = s3_objects()
    with fail_operation("create_endpoint", "no capacity"):
        code, _, err = create_mme(capsys, mme_moto, ecr_images["multi"])
    assert code == 1 and "no capacity" in err and "rollback complete" in err
    sm = boto3.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert s3_objects() == before                              # the user's archives stay


@pytest.mark.parametrize("policy", ["rollback", "keep"])
def test_create_multi_model_signal_while_creating_follows_the_rule(mme_moto, ecr_images, prefix, policy):
    """A real SIGINT to a `deploy create --multi-model` process while SageMaker is Creating: the
    interruption rule of deploy create (docs/deploy.md), and the archives under the prefix stay."""
    from tests.fixtures.moto import endpoint_state, hold_endpoint, release_endpoint
    from tests.deploy.test_deploy_interrupts import Deploy

    before = s3_objects()
    hold_endpoint("held-mme", "Creating")
    run = Deploy("create", "--multi-model", "--image", ecr_images["multi"], "--model-data", PREFIX,
                 "--role", mme_moto["role"], "--name", "held-mme", "--poll", "0.05", "--on-interrupt", policy)
    run.wait_for("held-mme: Creating")
    run.signal("SIGINT")
    if policy == "rollback":
        run.wait_for("SageMaker cannot delete endpoint held-mme while it is Creating")
        release_endpoint("held-mme", "InService")
    code, out, err = run.finish()
    assert code == 130, err
    sm = boto3.client("sagemaker")
    if policy == "rollback":
        assert "rollback complete" in err and endpoint_state("held-mme") is None
        assert sm.list_models()["Models"] == []
    else:
        assert "keeping what exists (--on-interrupt keep)" in err and "deploy wait held-mme" in err
        assert endpoint_state("held-mme")["status"] == "Creating"
        (model,) = sm.list_models()["Models"]
        assert sm.describe_model(ModelName=model["ModelName"])["PrimaryContainer"]["Mode"] == "MultiModel"
        release_endpoint("held-mme", "InService")
    assert s3_objects() == before


def test_invoke_target_model_reaches_the_endpoint(capsys, mme_moto, ecr_images, prefix):
    assert create_mme(capsys, mme_moto, ecr_images["multi"])[0] == 0
    moto_mme.INVOKES.clear()
    code, out, err = run(capsys, "invoke", "digits-mme", "--target-model", "a.tar.gz", "--json", '{"x": [1]}')
    assert code == 0, err
    assert json.loads(out) == {"endpoint": "digits-mme", "target_model": "a.tar.gz",
                               "model_data": f"{PREFIX}a.tar.gz", "body_bytes": 10}
    assert moto_mme.INVOKES[-1]["target_model"] == "a.tar.gz"
    assert moto_mme.INVOKES[-1]["endpoint"] == "digits-mme"
    code, out, err = run(capsys, "invoke", "digits-mme", "--target-model", "nope.tar.gz", "--json", "{}")
    assert code == 1 and "Failed to download model data" in err and "digits/nope.tar.gz" in err
    code, out, err = run(capsys, "invoke", "digits-mme", "--json", "{}")      # no TargetModel
    assert code == 1 and "TargetModel is required" in err
    code, out, err = run(capsys, "invoke", "digits-mme", "--target-model", "../x.tar.gz", "--json", "{}")
    assert code == 2 and "no '..'" in err
    code, out, err = run(capsys, "invoke", "digits-mme", "--target-model", "a.tar.gz", "--json", "{}",
                         "--output", "json")
    assert code == 0 and json.loads(out)["target_model"] == "a.tar.gz"


def test_models_add_and_list(capsys, mme_moto, ecr_images, prefix, archives, tmp_path):
    assert create_mme(capsys, mme_moto, ecr_images["multi"])[0] == 0
    code, out, err = run(capsys, "models", "add", "digits-mme", str(archives / "b.tar.gz"))
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"b.tar.gz  ({PREFIX}b.tar.gz")
    assert "deploy invoke digits-mme --target-model b.tar.gz" in out
    folder = fake_model(tmp_path / "resnet")
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text("def input_handler(data, context):\n    return data.read()\n")
    code, out, err = run(capsys, "models", "add", "digits-mme", str(folder), "--name", "v2/resnet.tar.gz",
                         "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target_model"] == "v2/resnet.tar.gz" and doc["uri"] == f"{PREFIX}v2/resnet.tar.gz"
    boto3.client("s3").download_file(BUCKET, "digits/v2/resnet.tar.gz", str(tmp_path / "got.tar.gz"))
    with tarfile.open(tmp_path / "got.tar.gz") as tar:       # packaged as `deploy package` does
        names = tar.getnames()
    assert "1/saved_model.pb" in names and "code/inference.py" in names
    # the same name again is refused (a loaded copy would keep serving), unless --overwrite
    code, _, err = run(capsys, "models", "add", "digits-mme", str(archives / "b.tar.gz"))
    assert code == 1 and "already exists" in err
    code, out, err = run(capsys, "models", "add", "digits-mme", str(archives / "c.tar.gz"), "--name", "b.tar.gz",
                         "--overwrite", "--output", "json")
    assert code == 0 and json.loads(out)["replaced"] is True
    # invoke the folder-made archive: moto got its TargetModel
    code, out, err = run(capsys, "invoke", "digits-mme", "--target-model", "v2/resnet.tar.gz", "--json", "{}")
    assert code == 0 and json.loads(out)["model_data"] == f"{PREFIX}v2/resnet.tar.gz"

    code, out, err = run(capsys, "models", "list", "digits-mme", "--output", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["a.tar.gz", "b.tar.gz", "v2/resnet.tar.gz"]
    assert rows[1]["size"] == (archives / "c.tar.gz").stat().st_size
    assert all(r["last_modified"].endswith("+00:00") for r in rows)
    code, out, _ = run(capsys, "models", "list", "digits-mme")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "LAST", "MODIFIED"] and lines[-1] == f"3 archive(s) under {PREFIX}"
    assert lines[3].startswith("v2/resnet.tar.gz") and "UTC" in lines[3]
    code, out, _ = run(capsys, "models", "list", "digits-mme", "--output", "text")
    assert out.splitlines()[0].split("\t")[:2] == ["a.tar.gz", str(rows[0]["size"])]


def test_models_add_refusals(capsys, mme_moto, ecr_images, prefix, archives, tmp_path, aws_calls):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, needle in ((bad, "not a tar archive"), (empty, "no"), (tmp_path / "missing", "does not exist")):
        aws_calls.clear()
        code, _, err = run(capsys, "models", "add", "digits-mme", str(source))
        assert code == 2, err
        assert needle in err
        assert aws_calls == []
    code, _, err = run(capsys, "models", "add", "digits-mme", str(archives / "a.tar.gz"), "--name", "/abs.tar.gz")
    assert code == 2 and "no leading '/'" in err
    # a single-model endpoint has no prefix to add to
    tgz_single = archives / "a.tar.gz"
    code, _, err = run(capsys, "create", "--image", ecr_images["multi"], "--model-data", str(tgz_single),
                       "--role", mme_moto["role"], "--name", "single")
    assert code == 0, err
    for argv in (("models", "add", "single", str(tgz_single)), ("models", "list", "single")):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "is not a multi-model endpoint" in err, err
    code, _, err = run(capsys, "models", "list", "nowhere")
    assert code == 1 and "no endpoint named nowhere" in err
    code, _, err = run(capsys, "invoke", "single", "--target-model", "a.tar.gz", "--json", "{}")
    assert code == 1 and "only for multi-model endpoints" in err


def test_delete_purge_s3_leaves_the_archives_under_the_prefix(capsys, mme_moto, ecr_images, archives):
    """issue 24: `delete --purge-s3` of a multi-model endpoint whose prefix is the endpoint's own name
    in the default bucket (s3://sagemaker-REGION-ACCOUNT/NAME/) took the user's NAME/model.tar.gz for
    an archive deploy uploaded (deploy names an unnamed endpoint's prefix so), deleted it and printed
    it twice (the step line and the summary). The archives under the prefix are the user's: they stay,
    and nothing is named as deleted twice."""
    bucket = f"sagemaker-{mme_moto['region']}-{mme_moto['account']}"
    boto3.client("s3").create_bucket(Bucket=bucket,
                                     CreateBucketConfiguration={"LocationConstraint": mme_moto["region"]})
    code, _, err = create_mme(capsys, mme_moto, ecr_images["multi"], model_data=f"s3://{bucket}/digits-mme/")
    assert code == 0, err
    for name in ("model.tar.gz", "b.tar.gz"):
        code, _, err = run(capsys, "models", "add", "digits-mme", str(archives / "a.tar.gz"), "--name", name)
        assert code == 0, err
    before = s3_objects()
    code, out, err = run(capsys, "delete", "digits-mme", "--purge-s3")
    assert code == 0, err
    assert s3_objects() == before == [f"s3://{bucket}/digits-mme/b.tar.gz", f"s3://{bucket}/digits-mme/model.tar.gz"]
    assert "s3://" not in out + err, out + err
    for stream in (out, err):
        lines = [line for line in stream.splitlines() if line.startswith("deleted")]
        items = [item for line in lines for item in line.removeprefix("deleted ").split(", ")]
        assert len(items) == len(set(items)), stream
    code, out, _ = run(capsys, "delete", "digits-mme", "--if-exists", "--purge-s3", "--output", "json")
    assert code == 0 and json.loads(out)["purged"] == [] and json.loads(out)["s3_archives"] == []


def test_strict_moto_refuses_an_unknown_mode(mme_moto):
    sm = boto3.client("sagemaker")
    with pytest.raises(Exception, match=r"'primaryContainer.mode' .* enum value set: \[SingleModel, MultiModel\]"):
        sm.create_model(ModelName="m", ExecutionRoleArn=mme_moto["role"],
                        PrimaryContainer={"Image": "x", "ModelDataUrl": PREFIX, "Mode": "Multi"})


# --- the local proxy against a stand-in container ----------------------------------------------

class StandIn:
    """The container's /models contract with room for CAPACITY models (507 beyond), recording calls."""

    def __init__(self, capacity: int, refuse: tuple[str, ...] = ()):
        self.capacity, self.refuse = capacity, refuse
        self.loaded: dict[str, str] = {}
        self.calls: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if self.path == "/ping":
                    return self.reply(200, {})
                self.reply(200 if name in outer.loaded else 404, {"modelName": name})

            def do_DELETE(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.calls.append(f"DELETE {name}")
                self.reply(200 if outer.loaded.pop(name, None) else 404, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/models":
                    doc = json.loads(body)
                    name = doc["model_name"]
                    outer.calls.append(f"LOAD {name}")
                    assert Path(outer.host_root, name, "model", "1", "saved_model.pb").is_file()
                    if name in outer.refuse or len(outer.loaded) >= outer.capacity:
                        return self.reply(507, {"error": f"model '{name}' would need about 9 MiB"})
                    outer.loaded[name] = doc["url"]
                    return self.reply(200, {"modelName": name, "modelUrl": doc["url"]})
                name = self.path.split("/")[2]
                outer.calls.append(f"INVOKE {name}")
                if name not in outer.loaded:
                    return self.reply(404, {"error": f"model '{name}' is not loaded"})
                self.reply(200, {"model": name, "got": body.decode(), "accept": self.headers.get("Accept")})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def standin_proxy(tmp_path, archives):
    def make(capacity, refuse=()):
        stand = StandIn(capacity, refuse)
        models = tmp_path / "models"
        models.mkdir()
        stand.host_root = models
        lines = []
        proxy = local_multimodel.Proxy(archives, models, stand.url, lines.append, container_root="/opt/ml/models")
        port = free_port()
        server = local_multimodel.serve_proxy(proxy, "127.0.0.1", port)
        made.append((stand, server))
        return stand, proxy, f"http://127.0.0.1:{port}", lines
    made = []
    yield make
    for stand, server in made:
        server.shutdown()
        stand.server.shutdown()


def local_invoke(capsys, url, target, body='{"x": 1}', *extra):
    return run(capsys, "invoke", "local", "--local", url, "--target-model", target, "--json", body, *extra)


def test_proxy_loads_on_first_use_and_unloads_the_least_recently_used(capsys, standin_proxy, tmp_path):
    stand, proxy, url, lines = standin_proxy(capacity=2)
    code, out, err = local_invoke(capsys, url, "a.tar.gz")
    assert code == 0, err
    assert json.loads(out) == {"model": "a", "got": '{"x": 1}', "accept": "*/*"}
    assert stand.calls == ["INVOKE a", "LOAD a", "INVOKE a"]
    assert (tmp_path / "models" / "a" / "model" / "1" / "saved_model.pb").is_file()
    assert local_invoke(capsys, url, "b.tar.gz")[0] == 0
    assert local_invoke(capsys, url, "a.tar.gz")[0] == 0        # a is now the most recently used
    stand.calls.clear()
    code, out, err = local_invoke(capsys, url, "c.tar.gz")      # full: b goes, not a
    assert code == 0, err
    assert stand.calls == ["INVOKE c", "LOAD c", "DELETE b", "LOAD c", "INVOKE c"]
    assert not (tmp_path / "models" / "b").exists()
    assert sorted(stand.loaded) == ["a", "c"]
    assert any("unloaded b.tar.gz (least recently used, to make room for c.tar.gz)" in l for l in lines)
    # boto3's own invoke_endpoint with TargetModel, as a user's client code calls it
    import botocore
    import botocore.config
    rt = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="eu-west-1",
                      config=botocore.config.Config(signature_version=botocore.UNSIGNED))
    r = rt.invoke_endpoint(EndpointName="anything", TargetModel="b.tar.gz", Body=b"[1]",
                           ContentType="application/json", Accept="application/json")
    assert json.loads(r["Body"].read()) == {"model": "b", "got": "[1]", "accept": "application/json"}
    assert r["InvokedProductionVariant"] == "AllTraffic"
    assert sorted(stand.loaded) == ["b", "c"]                   # a was least recently used then
    status = requests.get(f"{url}/local/models", timeout=10).json()
    assert [m["target_model"] for m in status["loaded"]] == ["c.tar.gz", "b.tar.gz"]
    assert status["archives"] == ["a.tar.gz", "b.tar.gz", "c.tar.gz"]
    assert [e["event"] for e in status["events"]].count("unload") == 2
    # plain HTTP: POST /invocations with the header
    r = requests.post(f"{url}/invocations", data=b"{}", headers={"X-Amzn-SageMaker-Target-Model": "c.tar.gz"},
                      timeout=10)
    assert r.status_code == 200 and r.json()["model"] == "c"


def test_proxy_errors_in_sagemakers_shape(capsys, standin_proxy, tmp_path, archives):
    stand, proxy, url, lines = standin_proxy(capacity=1, refuse=("c",))
    assert local_invoke(capsys, url, "a.tar.gz")[0] == 0
    code, _, err = local_invoke(capsys, url, "c.tar.gz")        # unloads a, then still 507: says so
    assert code == 1 and "does not fit in the container's memory even with every other model unloaded" in err
    assert stand.calls[-3:] == ["LOAD c", "DELETE a", "LOAD c"]
    assert stand.loaded == {} and not (tmp_path / "models" / "c").exists()
    code, _, err = local_invoke(capsys, url, "missing.tar.gz")
    assert code == 1 and "ValidationError" in err and "no missing.tar.gz under" in err
    r = requests.post(f"{url}/invocations", data=b"{}", timeout=10)
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "ValidationError:" \
        and "TargetModel" in r.json()["message"]
    evil = archives / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        import io
        tar.addfile(info, io.BytesIO(b"x"))
    before = list(stand.calls)
    code, _, err = local_invoke(capsys, url, "evil.tar.gz")
    assert code == 1 and "unsafe archive member '../escape.txt'" in err
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "models" / "escape.txt").exists()
    assert [c for c in stand.calls[len(before):] if c.startswith("LOAD")] == []
    code, _, err = run(capsys, "invoke", "local", "--local", f"http://127.0.0.1:{free_port()}",
                       "--target-model", "a.tar.gz", "--json", "{}")
    assert code == 1 and "nothing answers there" in err


def test_local_multi_model_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "local", "--image", "x", "--multi-model", str(tmp_path / "nope"))
    assert code == 2 and "not a folder" in err
    code, _, err = run(capsys, "local", "--image", "x", "--multi-model", str(tmp_path), "--model-data", "m.tar.gz")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "local", "--image", "x")
    assert code == 2 and "--multi-model DIR" in err
    code, _, err = run(capsys, "local", "--image", "x", "--model-data", str(tmp_path), "--memory", "2g")
    assert code == 2 and "--memory goes with --multi-model" in err


def test_container_names():
    assert target_models.container_name("digits.tar.gz") == "digits"
    assert target_models.container_name("v2/digits.tar.gz").startswith("v2-digits-")
    assert target_models.container_name("v2/digits.tar.gz") != target_models.container_name("v2-digits.tar.gz")
    assert multimodel.check_prefix("s3://b-1/p") == "s3://b-1/p/"


# --- the real amd64 image ----------------------------------------------------------------------

HOG = """
import numpy as np

BALLAST_MIB = 900


def model_fn(model_dir):
    return np.ones((BALLAST_MIB << 20) // 8)   # touched: 900 MiB resident while loaded


def predict_fn(data, model):
    return np.asarray([[model.nbytes >> 20]], dtype=np.float32)
"""
MEMORY = "2g"       # docker run --memory: 90% of it (1843 MiB) is where the container stops loading


def _mlp_archives(mlp_model_dir, folder: Path) -> None:
    """a.tar.gz and b.tar.gz: the MLP; huge.tar.gz: the MLP with a 64 GiB sparse file (GNU tar keeps
    the holes, and the safe unpacker writes them back as holes), which no container can load;
    hog-a/hog-b.tar.gz: the MLP with a model_fn holding 900 MiB, so that in a 2 GiB container one
    fits and two do not."""
    folder.mkdir()
    for name in ("a", "b"):
        subprocess.run(["tar", "-czf", str(folder / f"{name}.tar.gz"), "-C", str(mlp_model_dir.model_dir), "."],
                       check=True)
    big = folder.parent / "huge-src"
    subprocess.run(["cp", "-r", str(mlp_model_dir.model_dir), str(big)], check=True)
    with open(big / "1" / "assets.bin", "wb") as f:
        f.truncate(64 << 30)
    subprocess.run(["tar", "--sparse", "--format=gnu", "-czf", str(folder / "huge.tar.gz"), "-C", str(big), "."],
                   check=True, timeout=300)
    assert (folder / "huge.tar.gz").stat().st_size < 10 << 20
    hog = mlp_model_dir.with_code(folder.parent / "hog-src", HOG)
    for name in ("hog-a", "hog-b"):
        subprocess.run(["tar", "-czf", str(folder / f"{name}.tar.gz"), "-C", str(hog), "."], check=True)


def _events(url):
    return [(e["event"], e["name"]) for e in requests.get(f"{url}/local/models", timeout=10).json()["events"]]


def test_local_multi_model_with_the_amd64_image(request, tmp_path, mlp_model_dir, capsys):
    image = request.getfixturevalue("image_amd64")
    archives = tmp_path / "archives"
    _mlp_archives(mlp_model_dir, archives)
    port = free_port()
    log = open(tmp_path / "local.log", "w+")
    proc = subprocess.Popen([DEPLOY, "local", "--image", image, "--multi-model", str(archives), "--port", str(port),
                             "--memory", MEMORY, "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    timings = []
    try:
        deadline = time.monotonic() + 180
        while "multi-model endpoint on" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.5)
        body = json.dumps({"instances": mlp_model_dir.inputs["features"].tolist()})
        expected = mlp_model_dir.expected["output_0"]
        for target in ("a.tar.gz", "b.tar.gz"):
            started = time.monotonic()
            code, out, err = local_invoke(capsys, url, target, body)
            assert code == 0, err + Path(log.name).read_text()
            first = time.monotonic() - started
            np.testing.assert_allclose(np.asarray(json.loads(out)["predictions"]), expected, rtol=1e-5, atol=1e-5)
            started = time.monotonic()
            assert local_invoke(capsys, url, target, body)[0] == 0
            again = time.monotonic() - started
            timings.append(f"{target}: first invoke (unpack + POST /models + invoke) {first:.2f} s, "
                           f"second {again:.2f} s (deploy invoke --local, in-process)")
        status = requests.get(f"{url}/local/models", timeout=10).json()
        assert [m["model_name"] for m in status["loaded"]] == ["a", "b"]
        assert _events(url) == [("load", "a"), ("load", "b")]
        # huge: the container answers 507; the proxy unloads a (least recently used), then b, then says so
        started = time.monotonic()
        code, _, err = local_invoke(capsys, url, "huge.tar.gz", body)
        timings.append(f"huge.tar.gz (64 GiB sparse): 507, two unloads, 507 again, refused in "
                       f"{time.monotonic() - started:.2f} s")
        assert code == 1 and "does not fit in the container's memory even with every other model unloaded" in err
        assert "MiB" in err
        assert _events(url)[2:] == [("unload", "a"), ("unload", "b"), ("refused", "huge")]
        assert requests.get(f"{url}/local/models", timeout=10).json()["loaded"] == []
        # a comes back on its next use
        code, out, err = local_invoke(capsys, url, "a.tar.gz", body)
        assert code == 0, err
        np.testing.assert_allclose(np.asarray(json.loads(out)["predictions"]), expected, rtol=1e-5, atol=1e-5)
        # hog-a fits next to a; hog-b does not: the proxy unloads a (least recently used: hog-a was
        # used after it), 507 again, unloads hog-a, and hog-b loads
        for target in ("hog-a.tar.gz", "hog-b.tar.gz"):
            started = time.monotonic()
            code, out, err = local_invoke(capsys, url, target, "[[1]]")
            assert code == 0, err + Path(log.name).read_text()
            assert json.loads(out) == {"predictions": [[900.0]]}
            timings.append(f"{target}: first invoke {time.monotonic() - started:.2f} s")
        assert _events(url)[5:] == [("load", "a"), ("load", "hog-a"), ("unload", "a"), ("unload", "hog-a"),
                                    ("load", "hog-b")], Path(log.name).read_text()
        assert [m["model_name"] for m in requests.get(f"{url}/local/models", timeout=10).json()["loaded"]] == ["hog-b"]
        # boto3 with TargetModel, as a user's code would call it: b loads (room for it next to hog-b)
        import botocore
        import botocore.config
        rt = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="eu-west-1",
                          config=botocore.config.Config(signature_version=botocore.UNSIGNED))
        r = rt.invoke_endpoint(EndpointName="local", TargetModel="b.tar.gz", Body=body, ContentType="application/json")
        np.testing.assert_allclose(np.asarray(json.loads(r["Body"].read())["predictions"]), expected, rtol=1e-5,
                                   atol=1e-5)
        # a model error comes back as SageMaker's ModelError with the container's status
        with pytest.raises(rt.exceptions.ModelError) as info:
            rt.invoke_endpoint(EndpointName="local", TargetModel="b.tar.gz", Body=b'{"instances": "nope"',
                               ContentType="application/json")
        assert info.value.response["OriginalStatusCode"] == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = Path(log.name).read_text()
        for line in timings:
            report("deploy local --multi-model (amd64 image)", line)
    assert proc.returncode == 0, text
    assert "stopped (exit code" in text
    name = next(l for l in text.splitlines() if l.startswith("docker run")).split("--name ")[1].split()[0]
    assert f"--memory {MEMORY}" in text and "SAGEMAKER_MULTI_MODEL=true" in text
    assert subprocess.run(["docker", "inspect", name], capture_output=True).returncode != 0   # removed
