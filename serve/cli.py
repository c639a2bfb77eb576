"""The `serve` command: settings -> CPU tuning -> user code set-up -> gunicorn.

SageMaker runs ``docker run IMAGE serve``; the same command serves on a plain host.
Any problem that would leave a half-working server (a bad variable, no model, a failed
requirements install, a script that cannot be found) exits non-zero here, before the
port is opened, with one line that starts "startup failed:". Problems only a worker can
find (a model TensorFlow cannot load, a script that raises on import) end the server the
same way from the worker (see server.ServeWorker).
"""
from __future__ import annotations

import logging
import sys

from serve import __version__
from model_archive.layout import ModelNotFound, find_models
from serve.contract.redact import SecretFilter, mask_standard_streams
from serve.contract.settings import SettingsError, env_name, load_settings, secret_values, unused_variables
from serve.contract.tuning import apply_environment, detect_cpu, plan
from serve.usercode import UserCodeSetupError, install_requirements, locate, universal_code

log = logging.getLogger("serve")


def configure_logging(level: int, secrets: SecretFilter) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(secrets)
    mask_standard_streams(secrets)  # after the handler took the real stderr


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: serve\n\nStarts the SageMaker inference server; configured only by environment "
              "variables (see README).")
        return 0
    if args and args[0] == "--version":
        print(__version__)
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    secrets = SecretFilter(secret_values())
    configure_logging(settings.container_log_level, secrets)

    tuning = plan(settings, detect_cpu())
    apply_environment(tuning)
    try:
        # multi-model: the universal code/ of the models folder, installed once, here
        code = universal_code(settings) if settings.multi_model else locate(settings)
        if code:
            code = install_requirements(code, settings)
    except UserCodeSetupError as exc:
        log.error("startup failed: %s", exc)
        return 1
    for name, why in unused_variables().items():
        log.info("%s is set but means nothing here: %s", name, why)
    try:
        if settings.multi_model:
            raise ModelNotFound("multi-model: models arrive through POST /models")
        models = find_models(settings.model_dir)
        model = ", ".join(f"{name} (version{'s' if len(v) > 1 else ''} {', '.join(x.version or '-' for x in v)})"
                          for name, v in models.items())
    except ModelNotFound as exc:
        if settings.multi_model:
            model = f"multi-model, loaded through POST /models from {settings.models_dir}"
        elif not code:
            log.error("startup failed: no model to serve: %s", exc)
            return 1
        else:
            model = "none found (model_fn will load it)"
    aliases = ", ".join(f"{name} as {env_name(field)}" for field, name in settings.aliases_applied.items())
    log.info("serve %s on 0.0.0.0:%d: %s, timeout %d s, models %s, signature serving_default unless the request "
             "names another, user code %s%s", __version__, settings.bind_to_port, tuning.describe(),
             settings.model_server_timeout, model, code.script if code else "none",
             f", AWS container settings applied: {aliases}" if aliases else "")

    from serve.server import ServeApplication

    ServeApplication(settings, tuning, code, secrets).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
