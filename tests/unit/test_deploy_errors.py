"""A service's error is summarized, never dumped (issue 24: an ECR 500 printed a whole HTML page)."""

from __future__ import annotations

import botocore.exceptions

from sagemaker_tf_deploy.core.aws import error_message, summarized

PAGE = ("<!doctype html>\n<html><head><title>502 Bad Gateway</title></head><body>" + "<p>x</p>" * 500
        + "</body></html>")


def client_error(message: str, code: str = "500", status: int = 500) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetDownloadUrlForLayer")


def test_an_html_page_becomes_its_title_and_status():
    text = error_message(client_error(PAGE))
    assert text == ("GetDownloadUrlForLayer: 500: the service answered with an HTML page (502 Bad Gateway), "
                    "HTTP 500, not an AWS error: a proxy or an outage between here and AWS?")
    assert "<" not in text


def test_a_long_message_is_cut_and_a_short_one_kept():
    assert len(summarized("word " * 400)) == 503
    assert error_message(client_error("Could not find model", "ValidationException", 400)) == \
        "GetDownloadUrlForLayer: ValidationException: Could not find model"
