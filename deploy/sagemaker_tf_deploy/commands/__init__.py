"""Layer 1: the command line. Argument parsing, the subcommands, and what the user sees.

Imports operations/, local/ and core/; nothing below imports this layer.
"""
