"""Layer 2: operations on AWS. Endpoint lifecycle, staging, scaling, waiting, clean-up, batch
transform, migration, invocation.

Imports local/ and core/, never commands/.
"""
