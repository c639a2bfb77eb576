"""Layer 3: the image run on this machine the way SageMaker runs it (the docker CLI): local mode,
local batch transform, the BF16 drift check, the multi-model proxy.

Imports core/ only.
"""
