"""`deploy migrate`, `promote`, `rollback`: the arguments and what the user reads (the steps are
operations/migrate.py).
"""

from __future__ import annotations


from ..core import checks, interrupts, output
from ..operations import migrate
from . import common


def cmd_migrate(args, console) -> int:
    spec = migrate.MigrateSpec(name=args.endpoint, image=args.image, instance_type=args.instance_type,
                               instance_count=args.instance_count, mode=args.mode, weight=args.weight,
                               env=checks.parse_env(args.env), role=args.role,
                               arch_check=not args.skip_arch_check, timeout=args.timeout, poll=args.poll,
                               on_interrupt=args.on_interrupt,
                               fallback_instance_types=args.fallback_instance_types)
    result = migrate.migrate(common.aws_from_args(args), spec, console)

    def table(r):
        lines = [f"endpoint {r['endpoint']} is {r['status']} on {r['endpoint_config']} ({r['mode']})",
                 f"  x86      {r['x86_variant']} (previous config {r['previous_config']}, kept for rollback)",
                 f"  graviton {r['variant']}: {r['instance_count']} x {r['instance_type']}, {r['image']}"]
        if r["mode"] == "canary":
            lines.append(f"  traffic  {r['variant']} {r['weight']:.0%}, {r['x86_variant']} {1 - r['weight']:.0%}")
            lines.append(f"  compare  deploy compare --endpoint {r['endpoint']} --variants "
                         f"{r['x86_variant']},{r['variant']} --requests FILE")
        elif r["mode"] == "shadow":
            lines.append(f"  traffic  {r['x86_variant']} answers; {r['weight']:.0%} of requests copied to "
                         f"{r['variant']} (see its CloudWatch metrics and data capture)")
        lines.append(f"  next     deploy promote {r['endpoint']}   |   deploy rollback {r['endpoint']}")
        return lines
    output.emit(result, args.output, table=table)
    return 0


def cmd_promote(args, console) -> int:
    result = migrate.promote(common.aws_from_args(args), args.endpoint, console, timeout=args.timeout, poll=args.poll,
                     on_interrupt=args.on_interrupt)
    output.emit(result, args.output, table=lambda r: [
        f"endpoint {r['endpoint']} runs {r['variant']} alone ({r['instance_type']}) on {r['endpoint_config']}",
        *[f"  deleted  {d}" for d in r["deleted"]]])
    return 0


def cmd_rollback(args, console) -> int:
    result = migrate.rollback(common.aws_from_args(args), args.endpoint, console, timeout=args.timeout, poll=args.poll)
    output.emit(result, args.output, table=lambda r: [
        f"endpoint {r['endpoint']} is back on {r['endpoint_config']}",
        *[f"  deleted  {d}" for d in r["deleted"]]])
    return 0


def add_parsers(sub, aws_args, wait_args) -> None:
    """Register migrate, promote and rollback (parents: the AWS flags, --timeout/--poll)."""
    p = common.add_endpoint_command(
        sub, "migrate", parents=[aws_args, wait_args],
        help="move an x86 endpoint to Graviton: shadow, canary or replace (reversible)",
        example="deploy migrate digits --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/"
                "sagemaker-tf-graviton:1.0 --mode canary --weight 0.1\n"
                "then: deploy compare --endpoint digits --requests requests.jsonl; "
                "deploy promote digits | deploy rollback digits")
    p.add_argument("--image", required=True, help="this project's image (arm64 or multi-arch), in ECR")
    p.add_argument("--instance-type", default="ml.c7g.xlarge", help="Graviton instance type (default ml.c7g.xlarge)")
    p.add_argument("--fallback-instance-types", metavar="T1,T2",
                   help="capacity fallback for the Graviton variant: instance pools tried in this order after "
                        "--instance-type (x86 types too, with a multi-arch image)")
    p.add_argument("--instance-count", type=int, help="Graviton instances (default: as many as the x86 variant has)")
    p.add_argument("--mode", choices=migrate.MODES, default="shadow",
                   help="shadow (default): Graviton gets a copy of live traffic, callers see x86 answers; "
                        "canary: a second production variant with --weight of the traffic; "
                        "replace: blue/green update to Graviton alone")
    p.add_argument("--weight", type=common.share, metavar="W",
                   help="canary: the Graviton share of traffic, 0..1 (default 0.1; 0 = reachable only "
                        "with TargetVariant); shadow: the share of requests copied (default 1)")
    p.add_argument("--env", action="append", metavar="K=V", help="extra or changed container environment")
    p.add_argument("--role", help="execution role for the Graviton model (default: the x86 model's)")
    p.add_argument("--skip-arch-check", action="store_true", help="do not check the image for arm64")
    interrupts.add_on_interrupt_argument(p)
    p.set_defaults(func=cmd_migrate)

    p = common.add_endpoint_command(
        sub, "promote", parents=[aws_args, wait_args],
        help="after migrate: Graviton takes all traffic, the x86 variant and model go", example="deploy promote digits")
    interrupts.add_on_interrupt_argument(p)
    p.set_defaults(func=cmd_promote)

    p = common.add_endpoint_command(
        sub, "rollback", parents=[aws_args, wait_args],
        help="after migrate: the endpoint back on its old config, what migrate made deleted",
        example="deploy rollback digits")
    p.set_defaults(func=cmd_rollback)
