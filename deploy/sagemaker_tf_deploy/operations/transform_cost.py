"""The cost line of `deploy transform`: instance-hours, cost per million records, and the same job's
estimate on batch transform's x86 default.

No price table is built in: on-demand prices differ by region and change, and none could be
checked from where this was written; the prices come from --price-per-hour (the run's instance
type) and --batch-price-per-hour (batch transform's x86 default), in USD per instance-hour, as the
SageMaker pricing page (https://aws.amazon.com/sagemaker/pricing/) lists them for the region.

Estimates scale the throughput measured by vCPUs and assume equal speed per vCPU; the summary
says so. vCPUs come from the size (large 2, xlarge 4, Nxlarge 4N, as for the c, m and r families).
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^ml\.[a-z0-9-]+\.(?:(\d*)xlarge|(large|medium))$")


def vcpus(instance_type: str) -> int | None:
    m = _SIZE.match(instance_type or "")
    if not m:
        return None
    if m.group(2):
        return {"large": 2, "medium": 1}[m.group(2)]
    return 4 * int(m.group(1) or 1)


def _per_million(price: float, records_per_hour: float) -> float | None:
    return price / records_per_hour * 1e6 if records_per_hour > 0 else None


def summary(*, records: int, seconds: float, instance_type: str, batch_type: str,
            instance_seconds: float | None = None, measured_vcpus: int | None = None,
            price: float | None = None, batch_price: float | None = None) -> dict:
    """The cost figures of one run.

    On AWS INSTANCE_SECONDS is what the endpoint's instances ran (the bill's measure). Locally
    (INSTANCE_SECONDS None) the run measured RECORDS in SECONDS on MEASURED_VCPUS vCPUs, and the
    hours on INSTANCE_TYPE are an estimate at that speed per vCPU."""
    out: dict = {"instance_type": instance_type, "batch_instance_type": batch_type, "records": records,
                 "assumes": "equal per-vCPU speed"}
    type_vcpus, batch_vcpus = vcpus(instance_type), vcpus(batch_type)
    if instance_seconds is not None:
        out["instance_hours"] = instance_seconds / 3600
        measured_vcpu_seconds = instance_seconds * type_vcpus if type_vcpus else None
        out["estimated"] = False
    else:
        measured_vcpu_seconds = seconds * measured_vcpus if measured_vcpus else None
        if measured_vcpu_seconds and type_vcpus:
            out["instance_hours"] = measured_vcpu_seconds / type_vcpus / 3600
        out["estimated"] = True
    per_vcpu_hour = records / measured_vcpu_seconds * 3600 if measured_vcpu_seconds else None
    out["records_per_vcpu_second"] = per_vcpu_hour / 3600 if per_vcpu_hour else None
    if price is not None and out.get("instance_hours") is not None:
        out["price_per_hour"] = price
        out["cost"] = out["instance_hours"] * price
        out["cost_per_million"] = out["cost"] / records * 1e6 if records else None
    if batch_price is not None and per_vcpu_hour and batch_vcpus:
        out["batch_price_per_hour"] = batch_price
        out["batch_instance_hours"] = records / (per_vcpu_hour * batch_vcpus)
        out["batch_cost"] = out["batch_instance_hours"] * batch_price
        out["batch_cost_per_million"] = _per_million(batch_price, per_vcpu_hour * batch_vcpus)
    return out


def lines(c: dict) -> list[str]:
    """The summary's cost lines."""
    priced = "price_per_hour" in c or "batch_price_per_hour" in c
    if c.get("instance_hours") is None or (c["estimated"] and not priced):
        return []                     # locally, the figures are only worth a line with a price
    how = "estimated at the speed per vCPU measured here" if c["estimated"] else "used"
    text = [f"  instance-hours  {c['instance_hours']:.6f} on {c['instance_type']} ({how})"]
    if "cost_per_million" in c and c["cost_per_million"] is not None:
        text.append(f"  cost            ${c['cost']:.6f} at ${c['price_per_hour']:g}/h: "
                    f"${c['cost_per_million']:.4f} per million records")
    if "batch_cost_per_million" in c:
        text.append(f"  on batch        {c['batch_instance_type']} (batch transform's x86 default) at "
                    f"${c['batch_price_per_hour']:g}/h: ${c['batch_cost']:.6f}, "
                    f"${c['batch_cost_per_million']:.4f} per million records (an estimate from the throughput "
                    f"measured, assuming equal per-vCPU speed)")
    if not priced:
        text.append("  cost            give --price-per-hour (and --batch-price-per-hour) for USD figures")
    return text
