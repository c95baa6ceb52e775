"""The error a user's own mistake raises: shown as one line, never as a traceback."""


class ConfigError(ValueError):
    """A user mistake in configuration: printed as one line, never as a traceback."""
