"""Waiting on SageMaker: an endpoint's status until it settles (or is gone), and delete_endpoint
retried while SageMaker refuses because the endpoint is Creating or Updating.

Reason to change: SageMaker's status machine, or how a wait polls, times out or yields to a signal.
Every wait takes POLL (seconds between two describe calls) from its caller: --poll on the command
line, a small value in the tests.
"""

from __future__ import annotations

import time

import botocore.exceptions

from ..core import interrupts
from ..core.aws import Aws, error_message, not_found
from ..core.errors import DeployError
from ..core.output import Reporter


TRANSIENT = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})   # SageMaker refuses changes


def describe_endpoint_or_none(aws: Aws, name: str) -> dict | None:
    try:
        return aws.sagemaker.describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if not_found(exc):
            return None
        raise


ROLLBACK_WAIT = 3600.0


def rollback_wait(timeout: float) -> float:
    """How long a rollback waits for SageMaker (to let a Creating endpoint go, or an update settle):
    an hour, or --timeout when longer. A stuck Creating endpoint can take that long to turn Failed;
    a second Ctrl-C stops the wait sooner."""
    return max(float(timeout), ROLLBACK_WAIT)


def _sleep(seconds: float, shield: interrupts.Shield | None = None) -> None:
    """Sleep in short slices so a shielded wait notices a second signal quickly."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0 or (shield is not None and shield.interrupted):
            return
        time.sleep(min(left, 0.25))


def wait_for_endpoint(aws: Aws, name: str, reporter: Reporter, *, timeout: float, poll: float,
                      gone_ok: bool = False, shield: interrupts.Shield | None = None,
                      fail_on_failed: bool = True) -> dict | None:
    """Poll describe_endpoint until a stable status; returns the description (None once deleted
    when gone_ok). Raises DeployError on Failed (with SageMaker's FailureReason), WaitTimedOut
    past TIMEOUT. With SHIELD (inside interrupts.shielded) a signal ends the wait: the last
    description is returned as it is, possibly still transient."""
    start = time.monotonic()
    try:
        while True:
            desc = describe_endpoint_or_none(aws, name)
            elapsed = time.monotonic() - start
            if desc is None:
                if gone_ok:
                    reporter.progress(name, "Deleted", elapsed)
                    return None
                raise DeployError(f"endpoint {name} is gone (deleted outside this command?)")
            status = desc["EndpointStatus"]
            reporter.progress(name, status, elapsed)
            if status == "Failed" and fail_on_failed:
                reason = desc.get("FailureReason", "no reason given")
                raise DeployError(f"endpoint {name} failed: {reason}")
            if status == "Deleting" and not gone_ok:
                raise DeployError(f"endpoint {name} is being deleted")
            if status not in TRANSIENT:
                return desc
            if shield is not None and shield.interrupted:
                return desc
            if elapsed > timeout:
                raise interrupts.WaitTimedOut(f"endpoint {name} still {status} after {elapsed:.0f} s "
                                              f"(--timeout {timeout:.0f})")
            _sleep(poll, shield)
    finally:
        reporter.progress_done()


def delete_endpoint_when_possible(aws: Aws, name: str, reporter: Reporter, *, timeout: float, poll: float,
                                  shield: interrupts.Shield | None = None) -> bool:
    """delete_endpoint, waiting while SageMaker refuses because the endpoint is Creating or Updating
    (it cannot delete an endpoint in those states). True once deleted or gone; False when the wait
    ran past TIMEOUT or a signal arrived in SHIELD."""
    start = time.monotonic()
    said = False
    while True:
        try:
            aws.sagemaker.delete_endpoint(EndpointName=name)
            return True
        except botocore.exceptions.ClientError as exc:
            if not_found(exc):
                return True
            desc = describe_endpoint_or_none(aws, name)
            if desc is None:
                return True
            status = desc["EndpointStatus"]
            if status == "Deleting":
                return True
            if status not in BUSY:
                reporter.info(f"could not delete endpoint {name}: {error_message(exc)}")
                return False
            if not said:
                reporter.info(f"SageMaker cannot delete endpoint {name} while it is {status}: waiting for it "
                              "to finish, then deleting it (a second Ctrl-C stops waiting and leaves it)")
                said = True
            elapsed = time.monotonic() - start
            reporter.progress(name, status, elapsed)
            if (shield is not None and shield.interrupted) or elapsed > timeout:
                reporter.progress_done()
                return False
            _sleep(poll, shield)
