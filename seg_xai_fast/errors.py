"""The package's own exception types (the command line maps them to exit statuses in cli/)."""


class UsageError(ValueError):
    """Bad arguments or inputs of a command: it exits with status 2 and this message."""


class VideoError(UsageError):
    """A video input or output the command cannot use: exit status 2 with this message."""
