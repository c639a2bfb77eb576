"""MMS handler service (exactly one class in this module, as MMS requires)."""
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.transformer import Transformer

from bench_tf_inference import TFInferenceHandler


class HandlerService(DefaultHandlerService):
    def __init__(self):
        super().__init__(transformer=Transformer(default_inference_handler=TFInferenceHandler()))
