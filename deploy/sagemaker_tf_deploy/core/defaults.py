"""What every model gets unless the user says otherwise: the production variant's name and the
container's environment (default_env). Used on AWS (create, update, migrate, transform,
multi-model) and on this machine (deploy local and its multi-model proxy), so it lives below both.

Reason to change: a new default variable.
"""

from __future__ import annotations

VARIANT = "AllTraffic"
SUBMIT_DIRECTORY = "/opt/ml/model/code"


def default_env(region: str, has_code: bool) -> dict[str, str]:
    """The environment every model gets unless --env overrides it.

    SAGEMAKER_PROGRAM / SAGEMAKER_SUBMIT_DIRECTORY only when the archive carries
    code/inference.py: pointing the server at a folder that is not there would fail its start.
    No DNNL_DEFAULT_FPMATH_MODE: BF16 fast math is decided in one place, by the server at its
    start (serve/tuning.py: BF16 when the CPU has bf16 units and the variable is unset), so an
    --env value, or one an x86 model already carries (migrate keeps it), is the only override.
    """
    env = {
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": region,
        "TF_ENABLE_ONEDNN_OPTS": "1",
    }
    if has_code:
        env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIRECTORY, **env}
    return env
