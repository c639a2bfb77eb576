"""The one error type the deploy command raises for problems the user can fix."""


class DeployError(Exception):
    """A failure with a message meant for the user (printed without a traceback)."""
