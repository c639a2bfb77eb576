"""Layer 4: what every layer above shares. Errors and exit codes, output, interrupts, the boto3
session, archives, instance types and image architectures, the local checks, the defaults every
model gets, and the rules for bodies, comparisons and target models.

Imports nothing from the layers above.
"""
