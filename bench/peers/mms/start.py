"""Start sagemaker-inference + Multi Model Server with the handler above.

Env: SAGEMAKER_BASE_DIR (model in <base>/model), SAGEMAKER_BIND_TO_PORT,
SAGEMAKER_MODEL_SERVER_WORKERS, MMS_CONFIG_FILE (where the toolkit writes its
properties; it defaults to /etc/sagemaker-mms.properties), TMPDIR/TEMP (pid file, sockets).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sagemaker_inference import model_server  # noqa: E402

model_server.MMS_CONFIG_FILE = os.environ.get("MMS_CONFIG_FILE", model_server.MMS_CONFIG_FILE)

if __name__ == "__main__":
    model_server.start_model_server(handler_service="bench_mms_service")
