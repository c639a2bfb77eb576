"""Layer 1: the command line. Argument parsing, one module per subcommand or family, and what
the user sees. Argument parsers live here and nowhere else.

Imports operations/, local/ and core/; nothing imports this layer.
"""
