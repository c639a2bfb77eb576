"""`deploy package`, `create`, `update`, `invoke`, `autoscale`, `delete`, `wait`, `list`, `status`:
one endpoint's life, as the user types and reads it (the steps are operations/).
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from ..core import archive, bodies, checks, interrupts, output
from ..core.output import Console
from ..core.errors import DeployError, UsageError
from ..operations import async_endpoint, endpoint, invoke, resources, scaling, waiting
from . import common


def cmd_package(args, console: Console) -> int:
    names = archive.package(Path(args.model_dir), Path(args.archive),
                            Path(args.code) if args.code else None)
    size = Path(args.archive).stat().st_size
    top = sorted({n.split("/")[0] for n in names})
    result = {"archive": args.archive, "bytes": size, "entries": len(names), "top": top}
    output.emit(result, args.output, table=lambda r: [
        f"wrote {r['archive']} ({r['bytes'] / 1e6:.1f} MB, {r['entries']} entries: {', '.join(r['top'])})"])
    return 0


def cmd_create(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    spec = endpoint.CreateSpec.from_args(args)
    out = endpoint.create(aws, spec, console)
    output.emit(out, args.output, table=lambda o: [
        f"endpoint {o['endpoint']} is {o['status']}",
        f"  model data  {o['model_data']}",
        f"  try it      deploy invoke {o['endpoint']} --json '...'",
        f"  remove it   deploy delete {o['endpoint']}"])
    return 0


def cmd_update(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    spec = endpoint.UpdateSpec(
        name=args.endpoint, image=args.image, model_data=args.model_data,
        instance_type=args.instance_type, instance_count=args.instance_count, role=args.role,
        env=checks.parse_env(args.env), bucket=args.bucket, timeout=args.timeout, poll=args.poll,
        arch_check=not args.skip_arch_check, instance_check=not args.skip_instance_check,
        on_interrupt=args.on_interrupt, fallback_instance_types=args.fallback_instance_types)
    out = endpoint.update(aws, spec, console)
    output.emit(out, args.output, table=lambda o: [
        f"endpoint {o['endpoint']} is {o['status']} on {o['endpoint_config']} ({o['image']}, {o['instance_type']})"])
    return 0


def cmd_invoke(args, console: Console) -> int:
    if args.async_invoke:
        return _invoke_async(args, console)
    if args.input or args.wait:
        raise UsageError("--input and --wait are for --async (an asynchronous endpoint)")
    aws = common.aws_from_args(args)
    body = common.read_body(args)
    out, content_type = invoke.invoke(aws, args.endpoint, body, common.content_type(args), args.accept,
                                        args.custom_attributes)
    if args.output in ("json", "text"):
        answer = invoke.softmax_response(out) if args.softmax else bodies.decoded(out, content_type)
        output.emit({"endpoint": args.endpoint, "content_type": content_type, "body": answer}, args.output)
        return 0
    common.print_response(out, content_type, args.softmax)
    return 0


def _invoke_async(args, console: Console) -> int:
    """deploy invoke ENDPOINT --async --input s3://... [--wait]: queue one request; print where its
    answer will be, or with --wait the answer (exit 0) or the failure SageMaker wrote (exit 1)."""
    if args.file or args.json is not None:
        raise UsageError("an async request's body is an object in S3: give --input s3://BUCKET/KEY, "
                         "not --file or --json")
    if not args.input:
        raise UsageError("--async needs --input s3://BUCKET/KEY (the request body, an object in S3)")
    checks.check_name(args.endpoint, "endpoint")
    aws = common.aws_from_args(args)
    call = async_endpoint.invoke(aws, args.endpoint, args.input, args.content_type, args.accept)
    queued = {"endpoint": args.endpoint, "inference_id": call.inference_id, "output_location": call.output,
              "failure_location": call.failure}
    if not args.wait:
        output.emit(queued, args.output, table=lambda o: [
            f"queued {o['inference_id']} on {o['endpoint']}",
            f"  answer   {o['output_location']}"]
            + ([f"  failure  {o['failure_location']}"] if o["failure_location"] else []))
        return 0
    console.info(f"queued {call.inference_id}; waiting for {call.output}"
                 + (f" or {call.failure}" if call.failure else ""))
    answer = async_endpoint.wait_for_answer(aws, call, timeout=args.timeout, poll=args.poll)
    if not answer.ok:
        raise DeployError(f"async inference {call.inference_id} failed ({answer.location}): "
                          f"{answer.body.decode('utf-8', errors='replace')[:2000]}")
    if args.output in ("json", "text"):
        output.emit({**queued, "body": bodies.decoded(answer.body, answer.content_type)}, args.output)
        return 0
    common.print_response(answer.body, answer.content_type, args.softmax)
    return 0


def cmd_autoscale(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    out = scaling.autoscale(aws, args.endpoint, min_count=args.min, max_count=args.max,
                             target=args.target_invocations, scale_in_cooldown=args.scale_in_cooldown,
                             scale_out_cooldown=args.scale_out_cooldown, variant=args.variant)
    output.emit(out, args.output, table=lambda o: [
        f"auto scaling {o['resource_id']}: {o['min']}..{o['max']} instances, target "
        f"{o['target']:g} invocations per instance per minute (policy {o['policy']})"])
    return 0


def cmd_delete(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    out = endpoint.delete(aws, args.endpoint, console, wait=not args.no_wait, timeout=args.timeout,
                          poll=args.poll, if_exists=args.if_exists, purge_s3=args.purge_s3)
    output.emit(out, args.output, table=_delete_table)
    return 0


def _delete_table(o) -> list[str]:
    lines = [f"deleted {', '.join(o['deleted'] + o['purged'])}" if o["deleted"] or o["purged"]
             else f"nothing left of {o['endpoint']}"]
    if o["s3_archives"]:
        lines.append(f"kept in S3 ({len(o['s3_archives'])}; --purge-s3 removes them): {', '.join(o['s3_archives'])}")
    return lines


def cmd_wait(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    checks.check_name(args.endpoint)
    desc = waiting.wait_for_endpoint(aws, args.endpoint, console, timeout=args.timeout, poll=args.poll)
    out = {"endpoint": args.endpoint, "status": desc["EndpointStatus"],
           "endpoint_config": desc.get("EndpointConfigName")}
    output.emit(out, args.output, table=lambda o: [f"endpoint {o['endpoint']} is {o['status']} on {o['endpoint_config']}"])
    return 0


def _age(when) -> str:
    if not isinstance(when, _dt.datetime):
        return str(when)
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cmd_list(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    rows = endpoint.list_endpoints(aws, args.name_contains)
    output.emit(rows, "json" if args.json else args.output, table=lambda rows: _list_table(rows, aws.region))
    return 0


def _list_table(rows, region) -> list[str]:
    if not rows:
        return [f"no endpoints in {region}"]
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'NAME'.ljust(width)}  {'STATUS':<14} {'INSTANCES':<22} CREATED"]
    for r in rows:
        inst = f"{r['count']} x {r['instance_type']}" if r["instance_type"] else ""
        lines.append(f"{r['name'].ljust(width)}  {r['status']:<14} {inst:<22} {_age(r['created'])}")
    return lines


def cmd_status(args, console: Console) -> int:
    aws = common.aws_from_args(args)
    checks.check_name(args.endpoint)
    d = resources.describe(aws, args.endpoint)
    d["scaling"] = {v["VariantName"]: scaling.scaling_of(aws, args.endpoint, v["VariantName"])
                    for v in (d["config"] or d["endpoint"]).get("ProductionVariants") or []}
    config = (d["config"] or {}).get("AsyncInferenceConfig")
    if config:
        out = config.get("OutputConfig") or {}
        d["async"] = {"output": out.get("S3OutputPath"), "failure": out.get("S3FailurePath"),
                      "max_concurrent_invocations": (config.get("ClientConfig") or {}).get(
                          "MaxConcurrentInvocationsPerInstance"),
                      "backlog": async_endpoint.backlog(aws, args.endpoint)}
    output.emit(d, "json" if args.json else args.output, table=_status_table)
    return 0


def _status_table(d) -> list[str]:
    """The human view of `deploy status`; copes with a config or model deleted outside deploy."""
    ep, cfg = d["endpoint"], d["config"]
    lines = [f"endpoint     {ep['EndpointName']}  {ep['EndpointStatus']}"]
    if ep.get("FailureReason"):
        lines.append(f"failure      {ep['FailureReason']}")
    cfg_name = ep.get("EndpointConfigName", "?")
    lines.append(f"config       {cfg_name}" + ("" if cfg else "  (gone: deleted outside deploy)"))
    pending = (ep.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    if pending and pending != cfg_name:
        lines.append(f"updating to  {pending}")
    live = {v["VariantName"]: v for v in ep.get("ProductionVariants") or []}
    for v in (cfg or {}).get("ProductionVariants") or list(live.values()):
        cur = live.get(v["VariantName"], {})
        count = cur.get("CurrentInstanceCount", v.get("InitialInstanceCount"))
        if v.get("InstancePools"):
            serving = {p["InstanceType"]: p.get("CurrentInstanceCount", 0) for p in cur.get("InstancePools") or []}
            lines.append(f"variant      {v['VariantName']}: {count} instance(s) in pools")
            for pool in sorted(v["InstancePools"], key=lambda p: p["Priority"]):
                n = serving.get(pool["InstanceType"], 0)
                lines.append(f"  pool {pool['Priority']}     {pool['InstanceType']}: {n} serving"
                             + (f" (model {pool['ModelNameOverride']})" if pool.get("ModelNameOverride") else ""))
        else:
            lines.append(f"variant      {v['VariantName']}: {count} x "
                         f"{v.get('InstanceType', '?' if not cfg else 'serverless')}")
        if "ModelName" not in v:
            continue
        model = d["models"].get(v["ModelName"])
        lines.append(f"model        {v['ModelName']}" + ("" if model else "  (gone: deleted outside deploy)"))
        c = (model or {}).get("PrimaryContainer", {})
        if model:
            lines.append(f"  image      {c.get('Image', '?')}")
            lines.append(f"  model data {c.get('ModelDataUrl', '-')}")
        for k, val in sorted((c.get("Environment") or {}).items()):
            lines.append(f"  env        {k}={val}")
        scaling = (d.get("scaling") or {}).get(v["VariantName"])
        if scaling and d.get("async"):
            lines.append(f"  scaling    {scaling['min']}..{scaling['max']} instances, target "
                         f"{scaling['target']} queued requests per instance")
        elif scaling:
            lines.append(f"  scaling    {scaling['min']}..{scaling['max']} instances, target "
                         f"{scaling['target']} invocations per instance per minute")
    if d.get("async"):
        a = d["async"]
        lines.append(f"async        answers to {a['output']}"
                     + (f", failures to {a['failure']}" if a.get("failure") else ""))
        instances = sum(v.get("CurrentInstanceCount", 0) for v in live.values())
        backlog = a.get("backlog")
        lines.append(f"  instances  {instances}")
        lines.append(f"  backlog    " + (f"{backlog['size']:g} queued requests ({_age(backlog['at'])})" if backlog
                                         else "no ApproximateBacklogSize datapoint in the last 10 minutes"))
    lines.append(f"created      {_age(ep.get('CreationTime'))}, modified {_age(ep.get('LastModifiedTime'))}")
    return lines


def add_parsers(sub, aws_args, wait_args) -> None:
    """Register the endpoint subcommands; AWS_ARGS and WAIT_ARGS are the parent parsers (the AWS
    flags and --output; --timeout and --poll)."""
    p = sub.add_parser("package", help="build a SageMaker model.tar.gz from a model folder",
                       parents=[aws_args])
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--code", metavar="DIR", help="user code folder to put under code/ (inference.py, ...)")
    p.add_argument("-o", "--archive", dest="archive", metavar="FILE", default="model.tar.gz",
                   help="archive to write (default model.tar.gz)")
    p.set_defaults(func=cmd_package)

    def model_args(p, required: bool):
        p.add_argument("--image", required=required, help="image URI (ECR for a real endpoint)")
        p.add_argument("--model-data", required=required, metavar="S3_URI|TAR_GZ|DIR",
                       help="s3://... or a local model.tar.gz / model folder (uploaded to S3)")
        p.add_argument("--role", metavar="ARN",
                       help="execution role ARN" + (" (required: this or $SAGEMAKER_ROLE_ARN)" if required
                                                    else " (default: the current model's)"))
        p.add_argument("--instance-type", default="ml.c7g.xlarge" if required else None,
                       help="instance type" + (" (default ml.c7g.xlarge)" if required else ""))
        p.add_argument("--fallback-instance-types", metavar="T1,T2",
                       help="capacity fallback: instance pools tried in this order after --instance-type when "
                            "it has no capacity (up to 4; the image must run on each)"
                            + ("" if required else "; '' drops the variant's pools"))
        p.add_argument("--instance-count", type=int, default=1 if required else None)
        p.add_argument("--env", action="append", metavar="K=V", help="container environment (repeatable); "
                       "overrides the defaults")
        p.add_argument("--bucket", help="bucket for a local archive (default sagemaker-REGION-ACCOUNT)")
        p.add_argument("--skip-arch-check", action="store_true",
                       help="do not compare the image's architectures with the instance type")
        p.add_argument("--skip-instance-check", action="store_true",
                       help="accept an instance type missing from the installed botocore's list of SageMaker "
                            "hosting types")
        interrupts.add_on_interrupt_argument(p)

    p = sub.add_parser("create", help="upload, create model + endpoint config + endpoint, wait",
                       parents=[aws_args, wait_args])
    model_args(p, required=True)
    p.add_argument("--name", help="endpoint name (default tf-graviton-TIMESTAMP)")
    p.add_argument("--no-wait", action="store_true", help="return once the endpoint is Creating")
    a = p.add_argument_group("asynchronous endpoint (--async; docs/deploy.md)")
    a.add_argument("--async", dest="async_inference", action="store_true",
                   help="an asynchronous inference endpoint: requests and answers are S3 objects")
    a.add_argument("--async-output", metavar="s3://...", help="where SageMaker writes the answers (required)")
    a.add_argument("--async-failure-output", metavar="s3://...", help="where it writes failures")
    a.add_argument("--max-concurrent-invocations", type=int, metavar="N",
                   help="requests each instance works on at once (1..1000; default SageMaker's choice)")
    a.add_argument("--min-instances", type=int, metavar="N",
                   help="auto scale on the backlog between N and --instance-count; 0 scales to zero when idle")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("invoke", help="send one request to an endpoint", parents=[aws_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.add_argument("--file", metavar="F", help="request body from a file ('-' for stdin)")
    p.add_argument("--json", metavar="JSON", help="request body as a JSON string")
    p.add_argument("--content-type", help="default: from the file extension, else application/json")
    p.add_argument("--accept")
    p.add_argument("--custom-attributes")
    p.add_argument("--softmax", action="store_true",
                   help='turn logits in {"predictions": [[...]]} into probabilities')
    a = p.add_argument_group("asynchronous endpoint (--async)")
    a.add_argument("--async", dest="async_invoke", action="store_true",
                   help="queue the request on an async endpoint; prints where the answer will be")
    a.add_argument("--input", metavar="s3://BUCKET/KEY", help="the request body, an object in S3")
    a.add_argument("--wait", action="store_true", help="wait for the answer (or the failure) and print it")
    a.add_argument("--timeout", type=common.positive_float, default=3600.0,
                   help="seconds --wait waits (default 3600)")
    a.add_argument("--poll", type=common.positive_float, default=5.0, help="seconds between looks in S3 (default 5)")
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("update", help="new model/config, blue/green update_endpoint, remove the old ones",
                       parents=[aws_args, wait_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    model_args(p, required=False)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("autoscale", help="target tracking on invocations per instance", parents=[aws_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.add_argument("--min", type=int, required=True)
    p.add_argument("--max", type=int, required=True)
    p.add_argument("--target-invocations", type=common.positive_float, required=True, metavar="X",
                   help="invocations per instance per minute to hold")
    p.add_argument("--variant", help="production variant (default: the endpoint's first)")
    p.add_argument("--scale-in-cooldown", type=int, default=300)
    p.add_argument("--scale-out-cooldown", type=int, default=60)
    p.set_defaults(func=cmd_autoscale)

    p = sub.add_parser("delete", help="delete endpoint, endpoint config and model", parents=[aws_args, wait_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the endpoint to be gone")
    p.add_argument("--if-exists", action="store_true",
                   help="exit 0 when there is nothing to delete (a second delete, say)")
    p.add_argument("--purge-s3", action="store_true",
                   help="also delete the model archives deploy uploaded for this endpoint (listed otherwise)")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("wait", help="wait until an endpoint is InService (e.g. after --no-wait or "
                       "--on-interrupt keep)", parents=[aws_args, wait_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("list", help="endpoints in the region", parents=[aws_args])
    p.add_argument("--name-contains")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)   # old spelling of --output json
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="one endpoint: status, instances, image, model data, env",
                       parents=[aws_args])
    p.add_argument("endpoint", metavar="ENDPOINT")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)   # old spelling of --output json
    p.set_defaults(func=cmd_status)
