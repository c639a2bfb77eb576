"""The user-code contract, in one place: the user's inference.py, written for AWS's TensorFlow
serving container or for the sagemaker-inference-toolkit, run unchanged.

- ``source``   where the script is (SAGEMAKER_SUBMIT_DIRECTORY, code/, universal code), unpacking,
               requirements, importing it, and which of the two styles it is written in.
- ``calls``    how the server calls into it: the ``context``, ``user_call``, what may come back.
- ``tfs``      AWS TensorFlow container scripts (``handler`` or ``input_handler``/
               ``output_handler``), run in the HTTP workers, as that container runs them.
- ``toolkit``  toolkit scripts (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``,
               ``transform_fn``), run in the model process next to the model.
- ``watchdog`` the time limit user code runs under, and /ping's 503 once it has hung everywhere.

``load_script`` is the one entry the model process uses: the style and, where the script runs
in that process, the imported module.
"""
from __future__ import annotations

from types import ModuleType

from serve.usercode.source import (DEFAULT_PROGRAM, MAX_CODE_ARCHIVE_BYTES, TFS_FUNCTIONS, TOOLKIT_FUNCTIONS, CodeLocation,
                     UserCodeSetupError, import_script, install_requirements, locate, locate_in,
                     no_known_functions, style_of_names, style_of_script, universal_code)

__all__ = ["DEFAULT_PROGRAM", "MAX_CODE_ARCHIVE_BYTES", "TFS_FUNCTIONS", "TOOLKIT_FUNCTIONS", "CodeLocation",
           "UserCodeSetupError", "import_script", "install_requirements", "load_script", "locate", "locate_in",
           "no_known_functions", "style_of_names", "style_of_script", "universal_code"]


def load_script(code: CodeLocation | None, scripts_here: bool,
                module_name: str | None = None) -> tuple[str, ModuleType | None]:
    """The style of CODE's script ("default" without one, "tfs" or "toolkit") and, when it runs in
    the calling process, the imported module. Toolkit scripts always run in the model process;
    AWS-container scripts do only when SCRIPTS_HERE (multi-model mode), else in the HTTP workers,
    which import them themselves. A script whose style its source does not show is imported to
    find out."""
    style = style_of_script(code.script) if code else "default"
    if style not in ("toolkit", None) and not (style == "tfs" and scripts_here):
        return style, None
    module = import_script(code, module_name)
    style = style_of_names(dir(module))
    if style is None:
        raise no_known_functions(code.script)
    return style, module
