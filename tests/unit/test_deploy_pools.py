"""Capacity fallback (issue 24): --fallback-instance-types puts InstancePools on the variant, in
priority order after --instance-type; every pool's architecture is checked against the image
before any call; status shows the pools and which one serves. Against moto made strict, whose
fixture keeps the pools (moto predates them)."""

from __future__ import annotations

import boto3
import pytest

from tests.fixtures.moto import run_deploy as run, serve_from_pool


def create(capsys, env, image, model, *extra):
    return run(capsys, "create", "--image", image, "--model-data", str(model), "--role", env["role"],
               "--poll", "0.01", "--name", "pooled", *extra)


def variant():
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint(EndpointName="pooled")["EndpointConfigName"]
    return sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]


def test_create_with_fallbacks_sends_instance_pools_in_priority_order(capsys, aws_env, ecr_images, model_tgz):
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz,
                            "--fallback-instance-types", "ml.c6g.xlarge,ml.c6i.xlarge")
    assert code == 0, err
    v = variant()
    assert v["InstancePools"] == [{"InstanceType": "ml.c7g.xlarge", "Priority": 1},
                                  {"InstanceType": "ml.c6g.xlarge", "Priority": 2},
                                  {"InstanceType": "ml.c6i.xlarge", "Priority": 3}]
    assert "InstanceType" not in v                     # the types are named in the pools only
    assert not any("ModelNameOverride" in p for p in v["InstancePools"])   # one model serves every pool
    assert ("ml.c7g.xlarge is arm64, ml.c6g.xlarge is arm64, ml.c6i.xlarge is amd64: ok") in err
    assert "(1 x ml.c7g.xlarge, then ml.c6g.xlarge, then ml.c6i.xlarge)" in err

    code, out, err = run(capsys, "status", "pooled")
    assert code == 0, err
    assert "  pool 1     ml.c7g.xlarge: 1 serving" in out and "  pool 3     ml.c6i.xlarge: 0 serving" in out
    serve_from_pool("pooled", "ml.c6i.xlarge")        # no Graviton capacity: the x86 pool serves
    code, out, err = run(capsys, "status", "pooled")
    assert "  pool 1     ml.c7g.xlarge: 0 serving" in out and "  pool 3     ml.c6i.xlarge: 1 serving" in out


def test_every_pool_is_checked_against_the_image_before_any_call(capsys, aws_env, ecr_images, model_tgz, aws_calls):
    code, out, err = create(capsys, aws_env, ecr_images["arm64"], model_tgz,
                            "--fallback-instance-types", "ml.c6g.xlarge,ml.c6i.xlarge")
    assert code == 1 and "has architectures [arm64] but ml.c6i.xlarge is amd64" in err
    assert not [c for c in aws_calls if "SageMaker.Create" in c] and boto3.client("sagemaker").list_models()["Models"] == []


@pytest.mark.parametrize("fallbacks, message", [
    ("ml.c7g.xlarge", "ml.c7g.xlarge is listed twice"),
    ("ml.c6g.xlarge,,ml.c6i.xlarge", "give types separated by commas"),
    ("ml.c6g.large,ml.c6g.xlarge,ml.c6i.large,ml.c6i.xlarge,ml.m5.large", "at most 4"),
    ("ml.c6i.xlargee", "not in SageMaker's list of hosting instance types"),
])
def test_bad_fallbacks_are_refused_before_any_call(capsys, aws_env, ecr_images, model_tgz, aws_calls,
                                                   fallbacks, message):
    code, out, err = create(capsys, aws_env, ecr_images["multi"], model_tgz, "--fallback-instance-types", fallbacks)
    assert code == 2 and message in err
    assert aws_calls == []


def test_update_keeps_changes_or_drops_the_pools(capsys, aws_env, ecr_images, model_tgz):
    assert create(capsys, aws_env, ecr_images["multi"], model_tgz)[0] == 0
    assert variant()["InstanceType"] == "ml.c7g.xlarge" and "InstancePools" not in variant()
    code, out, err = run(capsys, "update", "pooled", "--fallback-instance-types", "ml.c6i.xlarge", "--poll", "0.01")
    assert code == 0, err
    assert [p["InstanceType"] for p in variant()["InstancePools"]] == ["ml.c7g.xlarge", "ml.c6i.xlarge"]
    code, out, err = run(capsys, "update", "pooled", "--instance-type", "ml.c7g.2xlarge", "--poll", "0.01")
    assert code == 0, err       # a new first type keeps the fallbacks
    assert [p["InstanceType"] for p in variant()["InstancePools"]] == ["ml.c7g.2xlarge", "ml.c6i.xlarge"]
    code, out, err = run(capsys, "update", "pooled", "--fallback-instance-types", "", "--poll", "0.01")
    assert code == 0, err
    assert variant()["InstanceType"] == "ml.c7g.2xlarge" and "InstancePools" not in variant()


def test_strict_moto_refuses_instance_type_beside_pools(aws_env):
    """AWS's guide: InstancePools replaces InstanceType in a variant (tests/fixtures/moto.py cites it)."""
    import boto3
    import botocore.exceptions

    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="m", ExecutionRoleArn=aws_env["role"], PrimaryContainer={"Image": "x"})
    pools = [{"InstanceType": "ml.c7g.xlarge", "Priority": 1}, {"InstanceType": "ml.c6i.xlarge", "Priority": 2}]
    with pytest.raises(botocore.exceptions.ClientError, match="cannot both be set"):
        sm.create_endpoint_config(EndpointConfigName="both", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
             "InstanceType": "ml.c7g.xlarge", "InstancePools": pools}])
    sm.create_endpoint_config(EndpointConfigName="pools", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1, "InstancePools": pools}])
