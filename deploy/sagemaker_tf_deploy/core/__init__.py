"""Layer 4: the pieces every layer above shares. Errors and exit codes, output, interrupts, the
boto3 session, archives, instance types, local checks.

Imports nothing from the layers above.
"""
