"""Layer 3: the image run on this machine, the way SageMaker runs it (docker CLI): local mode,
local batch transform.

Imports core/ only.
"""
