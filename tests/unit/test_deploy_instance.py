"""Instance type -> architecture, and the image/instance compatibility rule."""

from __future__ import annotations

import pytest

from sagemaker_tf_deploy.core import instance
from sagemaker_tf_deploy.core.errors import DeployError, UsageError

GRAVITON = ["ml.c6g.large", "ml.c6gn.xlarge", "ml.c6gd.2xlarge", "ml.m6g.large", "ml.m6gd.xlarge",
            "ml.r6g.4xlarge", "ml.c7g.xlarge", "ml.c7gn.16xlarge", "ml.m7g.large", "ml.r7g.xlarge",
            "ml.c8g.xlarge", "ml.m8g.48xlarge", "ml.r8g.large", "ml.t4g.medium", "ml.p6e-gb200.36xlarge"]
X86 = ["ml.c5.xlarge", "ml.c5d.large", "ml.c6i.xlarge", "ml.c6in.2xlarge", "ml.m5.large", "ml.m6i.large",
       "ml.m7i.xlarge", "ml.c7i.large", "ml.c7a.large", "ml.r5.large", "ml.t2.medium", "ml.g4dn.xlarge",
       "ml.g5.2xlarge", "ml.g6.xlarge", "ml.p3.2xlarge", "ml.p4d.24xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge", "ml.p6-b200.48xlarge"]


@pytest.mark.parametrize("instance_type", GRAVITON)
def test_graviton_families(instance_type):
    assert instance.instance_arch(instance_type) == "arm64"


@pytest.mark.parametrize("instance_type", X86)
def test_x86_families(instance_type):
    assert instance.instance_arch(instance_type) == "amd64"


def test_family():
    assert instance.family("ml.c6gn.2xlarge") == "ml.c6gn"
    assert instance.family("ml.g4dn.xlarge") == "ml.g4dn"


@pytest.mark.parametrize("bad", ["c7g.xlarge", "ml.c7g", "ml.xlarge", "", "ml..xlarge", "ML.C7G.XLARGE"])
def test_malformed_types_are_refused(bad):
    with pytest.raises(DeployError, match="is not of the form ml.<family>.<size>"):
        instance.instance_arch(bad)


def test_compatibility():
    assert instance.check_compatible("img", {"arm64", "amd64"}, "ml.c7g.xlarge") == "arm64"
    assert instance.check_compatible("img", {"arm64", "amd64"}, "ml.c6i.xlarge") == "amd64"
    assert instance.check_compatible("img", {"arm64"}, "ml.m6gd.large") == "arm64"
    with pytest.raises(DeployError, match=r"image img has architectures \[arm64\] but ml.c5.xlarge is amd64"):
        instance.check_compatible("img", {"arm64"}, "ml.c5.xlarge")
    with pytest.raises(DeployError, match=r"\[amd64\] but ml.c7g.xlarge is arm64: build it for linux/arm64"):
        instance.check_compatible("img", {"amd64"}, "ml.c7g.xlarge")


def test_each_api_reads_its_own_enum_from_botocore():
    """Hosting and batch transform take different instance types, each its own enum in the installed
    botocore's SageMaker model (issue 24): hosting has the Graviton families, transform has none."""
    import botocore.session
    model = botocore.session.get_session().get_service_model("sagemaker")
    assert instance.hosting_types() == frozenset(model.shape_for("ProductionVariantInstanceType").enum)
    assert instance.transform_types() == frozenset(model.shape_for("TransformInstanceType").enum)
    assert {instance.instance_arch(t) for t in instance.transform_types()} == {"amd64"}
    graviton_hosting = {instance.family(t) for t in instance.hosting_types() if instance.instance_arch(t) == "arm64"}
    assert {"ml.c6g", "ml.c7g", "ml.m6g", "ml.r8g", "ml.c8g"} <= graviton_hosting
    assert instance.DEFAULT_TRANSFORM_TYPE in instance.transform_types()
    assert instance.instance_arch(instance.DEFAULT_TRANSFORM_TYPE) == "amd64"
    assert instance.DEFAULT_HOSTING_TYPE in instance.hosting_types()


def test_transform_refuses_graviton_with_the_ways_forward():
    with pytest.raises(UsageError) as refused:
        instance.check_transform_type("ml.c7g.4xlarge")
    message = str(refused.value)
    assert "batch transform has no Graviton instances" in message
    assert "--instance-type ml.c5.4xlarge" in message and "--engine async --instance-type ml.c7g.4xlarge" in message
    assert instance.check_transform_type("ml.m5.xlarge") == "ml.m5.xlarge"
    with pytest.raises(UsageError, match="did you mean ml.m5.xlarge"):
        instance.check_transform_type("ml.m5.xlargee")
