"""`deploy transform`: the arguments, and the result of a SageMaker batch transform job
(operations/transform.py) or of --local, the same on this machine (local/transform.py, with
--engine batch or async).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core import checks, instance, output
from ..core.errors import DeployError, UsageError
from ..core.interrupts import KEEP, ROLLBACK
from ..local import agent, transform as transform_local
from ..operations import transform, transform_async, transform_cost
from . import common


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _payload_mb(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be 0..100")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `deploy transform` on the subparsers of commands/main.py."""
    p = sub.add_parser(
        "transform", help="batch transform: a SageMaker job over s3:// data, or --local on this machine",
        description="Run a SageMaker batch transform job (model + job, wait, model deleted after), "
                    "or with --local do the same with the image on this machine.",
        epilog="examples:\n"
               "  deploy transform --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tf-graviton:1.0 "
               "--model-data model.tar.gz --input s3://my-bucket/batch/in/ --output s3://my-bucket/batch/out/\n"
               "  deploy transform --local --image sagemaker-tf-graviton:dev-amd64 --model-data model.tar.gz "
               "--input data/ --output out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_aws_arguments(p.add_argument_group("AWS"))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.add_argument("--format", choices=output.FORMATS, default=output.DEFAULT_FORMAT,
                   help="result format on stdout: table (default), json or text (what other commands call "
                        "--output; here --output is the destination, as in SageMaker's API)")
    p.add_argument("--local", action="store_true",
                   help="run the image here and do what SageMaker's batch agent does (folders, not S3)")
    p.add_argument("--engine", choices=transform.ENGINES, default="batch",
                   help="batch: SageMaker batch transform (x86 instance types only; default); async: an "
                        "asynchronous inference endpoint scaled 0..--max-instances, for Graviton types. "
                        "Same input, output and results")
    p.add_argument("--image", required=True, help="image URI (ECR for SageMaker; any local image with --local)")
    p.add_argument("--model-data", required=True, metavar="S3_URI|TAR_GZ|DIR",
                   help="s3://... or a local model.tar.gz / model folder (uploaded for SageMaker)")
    p.add_argument("--input", required=True, metavar="s3://.../|DIR", help="input prefix (a folder with --local)")
    p.add_argument("--output", required=True, metavar="s3://.../|DIR",
                   help="output prefix (a folder with --local): FILE.out per input FILE")
    p.add_argument("--instance-type",
                   help=f"default {instance.DEFAULT_TRANSFORM_TYPE} (batch transform has no Graviton types: "
                        f"see --engine async), {transform.ASYNC_DEFAULT_TYPE} with --engine async")
    p.add_argument("--instance-count", type=_positive_int, default=1)
    p.add_argument("--content-type", default="text/csv", help="of the input records (default text/csv)")
    p.add_argument("--accept", help="media type to ask for (default: the content type, so that the answer "
                                    "has one line per record)")
    p.add_argument("--split-type", choices=("Line", "RecordIO", "None"), default="Line",
                   help="Line: one record per line (default); RecordIO: one per RecordIO record; "
                        "None: each file is one record")
    p.add_argument("--strategy", choices=("MultiRecord", "SingleRecord"),
                   help="records per request (default: the container's /execution-parameters)")
    p.add_argument("--max-payload-mb", type=_payload_mb, metavar="M",
                   help="largest request body in MB (default: the container's /execution-parameters)")
    p.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                   help="requests in flight per instance (default: the container's /execution-parameters)")
    p.add_argument("--join-source", choices=("Input",), help="Input: join each output with its input record")
    p.add_argument("--env", action="append", metavar="K=V", help="container environment (repeatable)")
    p.add_argument("--price-per-hour", type=common.positive_float, metavar="USD",
                   help="on-demand price of --instance-type per instance-hour: the summary adds cost and cost "
                        "per million records")
    p.add_argument("--batch-price-per-hour", type=common.positive_float, metavar="USD",
                   help=f"price per hour of batch transform's x86 default ({transform.BATCH_X86_DEFAULT}): the summary "
                        "adds the same job's estimated cost there (equal per-vCPU speed assumed)")
    en = p.add_argument_group("async engine (--engine async)")
    en.add_argument("--max-in-flight", type=_positive_int, metavar="N",
                    help="requests out at once (default: twice the requests the instances take at once)")
    en.add_argument("--max-instances", type=_positive_int, default=1, metavar="N",
                    help="auto scaling from 0 to N instances on the backlog (default 1)")
    en.add_argument("--keep", action="store_true",
                    help="at the end, keep the endpoint scaled to zero instead of removing it")
    sm = p.add_argument_group("SageMaker job (without --local)")
    sm.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE_ARN"),
                    help="execution role ARN (default: $SAGEMAKER_ROLE_ARN)")
    sm.add_argument("--name", help="job name (default tf-graviton-transform-TIMESTAMP)")
    sm.add_argument("--bucket", help="bucket for a local model archive (default sagemaker-REGION-ACCOUNT)")
    sm.add_argument("--skip-arch-check", action="store_true",
                    help="do not compare the image's architectures with the instance type")
    sm.add_argument("--timeout", type=common.positive_float, default=86400.0,
                    help="seconds to wait for the job (default 86400)")
    sm.add_argument("--poll", type=common.positive_float, default=30.0, help="seconds between status checks (default 30)")
    sm.add_argument("--on-interrupt", choices=(ROLLBACK, KEEP), default=ROLLBACK,
                    help="on Ctrl-C/SIGTERM/SIGHUP or --timeout while the job runs: rollback (stop the job, "
                         "delete the model; default) or keep (leave the job running)")
    lo = p.add_argument_group("local mode (--local)")
    lo.add_argument("--port", type=int, default=8080, help="host port for the container (default 8080)")
    common.add_image_run_arguments(lo)
    lo.add_argument("--logs", action="store_true", help="stream the container's log")
    p.set_defaults(func=cmd_transform)
    return p


def cmd_transform(args, console) -> int:
    env = checks.parse_env(args.env)
    args.instance_type = args.instance_type or (transform.ASYNC_DEFAULT_TYPE if args.engine == "async"
                                                else instance.DEFAULT_TRANSFORM_TYPE)
    if args.local:
        return _cmd_local(args, console, env)
    if args.engine == "async":
        return _cmd_async(args, console, env)
    spec = transform.TransformSpec(
        image=args.image, model_data=args.model_data, input=args.input, output=args.output, role=args.role,
        name=args.name, instance_type=args.instance_type, instance_count=args.instance_count,
        content_type=args.content_type, accept=args.accept, split_type=args.split_type,
        strategy=args.strategy, max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent,
        join_source=args.join_source, env=env, bucket=args.bucket, arch_check=not args.skip_arch_check,
        timeout=args.timeout, poll=args.poll, on_interrupt=args.on_interrupt)
    transform.check_spec(spec)                     # before AWS is even configured
    aws = common.aws_from_args(args)
    out = transform.run_remote(aws, spec, console)
    output.emit(out, args.format, table=lambda o: [
        f"transform job {o['job']} is {o['status']}",
        f"  output      {o['output']}",
        f"  instances   {o['instance_count']} x {o['instance_type']}",
        f"  model       {o['model']} {'deleted' if o['model_deleted'] else 'NOT deleted'}",
        f"  logs        {o['logs']}"])
    return 0


def _cmd_async(args, console, env: dict[str, str]) -> int:
    spec = transform_async.AsyncTransformSpec(
        image=args.image, model_data=args.model_data, input=args.input, output=args.output, role=args.role,
        name=args.name, instance_type=args.instance_type, max_instances=args.max_instances,
        content_type=args.content_type, accept=args.accept, split_type=args.split_type, strategy=args.strategy,
        max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent, max_in_flight=args.max_in_flight,
        join_source=args.join_source, env=env, bucket=args.bucket, arch_check=not args.skip_arch_check,
        timeout=args.timeout, poll=args.poll, collect_poll=min(1.0, args.poll), on_interrupt=args.on_interrupt,
        keep=args.keep)
    transform_async.check_spec(spec)     # before AWS is even configured
    aws = common.aws_from_args(args)
    out = transform_async.run(aws, spec, console, quiet=args.quiet)
    result = out["result"]
    doc = {**run_document(result, "async"), "endpoint": out["endpoint"], "kept": out["kept"],
           "output": out["output"], "instance_type": out["instance_type"], "max_instances": out["max_instances"],
           "model_data": out["model_data"]}
    doc["cost"] = transform_cost.summary(
        records=result.records, seconds=result.seconds, instance_type=args.instance_type,
        batch_type=transform.BATCH_X86_DEFAULT, instance_seconds=result.instance_seconds, price=args.price_per_hour,
        batch_price=args.batch_price_per_hour)

    def table(d):
        lines = run_table(d)
        where = (f"kept, scaled to zero (`deploy delete {d['endpoint']}` removes it)" if d["kept"] else "removed")
        return (lines[:1] + [f"  endpoint {d['endpoint']} ({d['instance_type']}, 0..{d['max_instances']}): {where}"]
                + lines[1:])
    output.emit(doc, args.format, table=table)
    _report_failures(result)
    return 0


def _cmd_local(args, console, env: dict[str, str]) -> int:
    if args.model_data.startswith("s3://") or args.input.startswith("s3://") or args.output.startswith("s3://"):
        raise UsageError("--local reads and writes local files: give a folder or file for --model-data, "
                         "--input and --output (copy S3 data down with `aws s3 cp --recursive`)")
    region = common.local_region(args)
    spec = transform_local.LocalTransformSpec(
        image=args.image, model_data=args.model_data, input=Path(args.input), output=Path(args.output),
        engine=args.engine, content_type=args.content_type, accept=args.accept, split_type=args.split_type,
        strategy=args.strategy, max_payload_mb=args.max_payload_mb, max_concurrent=args.max_concurrent,
        max_in_flight=args.max_in_flight, join_source=args.join_source, env=env, region=region,
        platform=args.platform, port=args.port, ping_timeout=args.ping_timeout, stream_logs=args.logs)
    if spec.strategy == "MultiRecord" and spec.split_type == "None":
        raise UsageError("--strategy MultiRecord needs --split-type Line or RecordIO (a whole file is one record)")
    if spec.join_source and spec.split_type == "RecordIO":
        raise UsageError("--join-source Input joins CSV or JSON records; RecordIO records are binary")
    if spec.max_payload_mb == 0:
        raise UsageError("--max-payload-mb 0 (no limit, SageMaker's setting for streamed records) is not "
                         "supported by --local: give 1..100")
    result = transform_local.run(spec, console.info, quiet=args.quiet)
    doc = run_document(result, args.engine)
    doc["cost"] = transform_cost.summary(
        records=result.records, seconds=result.seconds, instance_type=args.instance_type,
        batch_type=transform.BATCH_X86_DEFAULT, measured_vcpus=os.cpu_count(), price=args.price_per_hour,
        batch_price=args.batch_price_per_hour)
    output.emit(doc, args.format, table=run_table)
    _report_failures(result)
    return 0


def run_document(result, engine: str) -> dict:
    """What a transform run by the agent (--local, or --engine async) puts on stdout."""
    return {"engine": engine, "records": result.records, "transformed": result.records - result.failed,
            "failed": result.failed, "files": result.files, "seconds": round(result.seconds, 3),
            "records_per_second": round(result.records_per_second, 1), "requests": result.requests,
            "retries": result.retries, "parameters": result.parameters, "sources": result.sources,
            "written": result.written,
            "failures": [{"file": f, "line": line, "error": m} for f, line, m in result.failures]}


def run_table(d: dict) -> list[str]:
    lines = [f"transformed {d['transformed']:,} of {d['records']:,} records from {d['files']} file(s) in "
             f"{d['seconds']:.2f} s: {d['records_per_second']:,.0f} records/s ({d['requests']:,} requests"
             + (f", {d['retries']:,} of them sent again" if d.get("retries") else "") + f") by the {d['engine']} engine"]
    lines += [f"  wrote {path}" for path in d["written"]]
    return lines + transform_cost.lines(d.get("cost") or {})


def _report_failures(result) -> None:
    """FAILED file:line lines on stderr and exit 1 when records failed."""
    if result.failures:
        for file, line, message in result.failures[:agent.MAX_REPORTED]:
            print(f"FAILED {file}:{line}: {message}", file=sys.stderr, flush=True)
        if len(result.failures) > agent.MAX_REPORTED:
            print(f"... and {len(result.failures) - agent.MAX_REPORTED} more failed records",
                  file=sys.stderr, flush=True)
        failed_files = sorted({f for f, _, _ in result.failures})
        raise DeployError(f"{result.failed} record(s) failed in {', '.join(failed_files)} "
                          f"(no .out written for {'it' if len(failed_files) == 1 else 'them'})")
