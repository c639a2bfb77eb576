"""The strict check every moto-backed test runs with (tests/fixtures/strict_aws.py) refuses what AWS
refuses, in AWS's words and shape, and lets through what AWS takes.

Each request here is sent with botocore's own client-side validation off, so it reaches the wire
as a careless client would send it: only the server-side check can refuse it.
"""

from __future__ import annotations

import json

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest
import requests

from tests.fixtures import strict_aws

UNCHECKED = botocore.config.Config(parameter_validation=False, retries={"max_attempts": 1})


def raw(service: str):
    return boto3.client(service, config=UNCHECKED)


def refused(call, **kwargs) -> dict:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**kwargs)
    return caught.value.response


def config_args(**variant) -> dict:
    base = {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
            "InstanceType": "ml.c7g.xlarge"}
    base.update(variant)
    return {"EndpointConfigName": "cfg", "ProductionVariants": [{k: v for k, v in base.items() if v is not None}]}


def test_a_bad_enum_value_is_refused_with_the_values_aws_lists(aws_env, strict_refusals):
    response = refused(raw("sagemaker").create_endpoint_config, **config_args(InstanceType="ml.c7g.huge"))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "ValidationException"
    message = response["Error"]["Message"]
    assert message.startswith("1 validation error detected: Value 'ml.c7g.huge' at "
                              "'productionVariants.1.member.instanceType' failed to satisfy constraint: "
                              "Member must satisfy enum value set: [")
    assert "ml.c7g.xlarge" in message
    assert [r["operation"] for r in strict_refusals] == ["CreateEndpointConfig"]
    assert raw("sagemaker").list_endpoint_configs()["EndpointConfigs"] == []     # moto never saw it


def test_transform_refuses_graviton_types_which_hosting_takes(aws_env):
    """The check behind issue 24: one type, two APIs, two enums."""
    response = refused(raw("sagemaker").create_transform_job, TransformJobName="t", ModelName="m",
                       TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                       "S3Uri": "s3://b/in/"}}},
                       TransformOutput={"S3OutputPath": "s3://b/out/"},
                       TransformResources={"InstanceType": "ml.c7g.4xlarge", "InstanceCount": 1})
    assert "Value 'ml.c7g.4xlarge' at 'transformResources.instanceType'" in response["Error"]["Message"]


def test_a_name_too_long_is_refused(aws_env):
    response = refused(raw("sagemaker").create_endpoint_config,
                       **{**config_args(), "EndpointConfigName": "c" * 64})
    assert (f"Value '{'c' * 64}' at 'endpointConfigName' failed to satisfy constraint: "
            "Member must have length less than or equal to 63") in response["Error"]["Message"]


def test_a_pattern_violation_is_refused_as_a_full_match(aws_env):
    """EndpointConfigName's pattern has no anchors: 'my_config' contains a match, and SageMaker
    still refuses the underscore (Java's matches(), not find())."""
    response = refused(raw("sagemaker").create_endpoint_config, **{**config_args(), "EndpointConfigName": "my_config"})
    assert "Value 'my_config' at 'endpointConfigName' failed to satisfy constraint: Member must satisfy " \
           "regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in response["Error"]["Message"]


def test_a_missing_required_member_is_refused(aws_env):
    response = refused(raw("sagemaker").create_endpoint_config, **config_args(VariantName=None))
    assert ("Value null at 'productionVariants.1.member.variantName' failed to satisfy constraint: "
            "Member must not be null") in response["Error"]["Message"]


def test_an_integer_out_of_range_is_refused_and_errors_are_counted(aws_env):
    response = refused(raw("sagemaker").create_endpoint_config,
                       **config_args(InitialInstanceCount=0, InstanceType="ml.nope"))
    message = response["Error"]["Message"]
    assert message.startswith("2 validation errors detected: ")
    assert ("Value '0' at 'productionVariants.1.member.initialInstanceCount' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1") in message


def model(aws_env) -> None:
    raw("sagemaker").create_model(ModelName="m", ExecutionRoleArn=aws_env["role"],
                                  PrimaryContainer={"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x:1"})


def test_a_valid_request_reaches_moto(aws_env, strict_refusals):
    model(aws_env)
    raw("sagemaker").create_endpoint_config(**config_args())
    assert [c["EndpointConfigName"] for c in raw("sagemaker").list_endpoint_configs()["EndpointConfigs"]] == ["cfg"]
    assert strict_refusals == []


@pytest.mark.aws_newer_than_botocore(ProductionVariantInstanceType=["ml.c9g.xlarge"])
def test_a_test_names_the_values_newer_than_botocore(aws_env):
    model(aws_env)
    raw("sagemaker").create_endpoint_config(**config_args(InstanceType="ml.c9g.xlarge"))
    response = refused(raw("sagemaker").create_endpoint_config,
                       **{**config_args(InstanceType="ml.c9g.2xlarge"), "EndpointConfigName": "other"})
    assert "Value 'ml.c9g.2xlarge'" in response["Error"]["Message"]     # only the named value


def test_the_marker_refuses_values_botocore_already_has():
    marker = pytest.mark.aws_newer_than_botocore(ProductionVariantInstanceType=["ml.c7g.xlarge"]).mark
    with pytest.raises(AssertionError, match="already in botocore"):
        strict_aws.allow_newer([marker])
    marker = pytest.mark.aws_newer_than_botocore(NoSuchShape=["x"]).mark
    with pytest.raises(AssertionError, match="no enum shape 'NoSuchShape'"):
        strict_aws.allow_newer([marker])


def _signed(url: str, service: str, target: str, body: dict) -> requests.Response:
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=url, data=json.dumps(body),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials("testing", "testing-secret-not-real"),
                            service, "eu-west-1").add_auth(request)
    return requests.post(url, data=request.body, headers=dict(request.headers), timeout=10)


def test_the_json_answer_has_aws_shape(aws_env):
    answer = _signed(aws_env["endpoint_url"], "sagemaker", "SageMaker.DescribeEndpoint", {"EndpointName": "a_b"})
    assert answer.status_code == 400
    assert answer.json() == {"__type": "ValidationException", "message": (
        "1 validation error detected: Value 'a_b' at 'endpointName' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")}


def test_a_service_without_an_entry_is_refused_not_passed(aws_env):
    answer = _signed(aws_env["endpoint_url"], "logs", "Logs_20140328.DescribeLogGroups", {})
    assert answer.status_code == 400 and "add it to SERVICES" in answer.json()["message"]


def test_rest_json_runtime_is_checked(aws_env):
    response = refused(raw("sagemaker-runtime").invoke_endpoint, EndpointName="e" * 64, Body=b"{}")
    assert response["Error"]["Code"] == "ValidationException"
    assert "at 'endpointName' failed to satisfy constraint: Member must have length less than or equal to 63" \
        in response["Error"]["Message"]


def test_query_protocol_answers_its_error_xml(aws_env):
    response = refused(raw("iam").create_role, RoleName="r" * 65, AssumeRolePolicyDocument="{}")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "ValidationError"
    assert "at 'roleName' failed to satisfy constraint: Member must have length less than or equal to 64" \
        in response["Error"]["Message"]


def test_s3_headers_are_checked_and_answered_in_s3_xml(aws_env):
    s3 = raw("s3")
    s3.create_bucket(Bucket="strict-bucket", CreateBucketConfiguration={"LocationConstraint": aws_env["region"]})
    response = refused(s3.put_object, Bucket="strict-bucket", Key="k", Body=b"x", StorageClass="COLD")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400 and response["Error"]["Code"] == "InvalidArgument"
    assert "Value 'COLD' at 'storageClass'" in response["Error"]["Message"]
    s3.put_object(Bucket="strict-bucket", Key="k", Body=b"x", StorageClass="STANDARD_IA")
    assert s3.get_object(Bucket="strict-bucket", Key="k")["Body"].read() == b"x"


def test_unsigned_requests_pass_unchecked(aws_env):
    assert requests.get(f"{aws_env['endpoint_url']}/moto-api/data.json", timeout=10).status_code == 200


def test_every_pattern_of_the_checked_services_compiles():
    """A pattern the check could not read would refuse (or pass) by accident: all of them compile,
    and Java's ASCII-only classes stay ASCII-only."""
    count = 0
    for name in sorted(set(strict_aws.SERVICES.values()) | {"sagemaker-runtime"}):
        model = strict_aws.service_model(name)
        for shape_name in model.shape_names:
            pattern = model.shape_for(shape_name).metadata.get("pattern")
            if pattern:
                strict_aws._compiled(pattern)
                count += 1
    assert count > 500
    assert strict_aws._compiled(r"arn:[\p{Alnum}\-]+:x").fullmatch("arn:aws-cn:x")
    assert not strict_aws._compiled(r"arn:[\p{Alnum}\-]+:x").fullmatch("arn:awsé:x")
    assert not strict_aws._compiled(r"\p{ASCII}*").fullmatch("é")
    assert strict_aws._compiled(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*").fullmatch("a\U0001F600")
    assert not strict_aws._compiled(r"\A\S[\p{Print}]*\z").fullmatch("ab\n")
