"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class MeigmError(Exception):
    """A problem with what the user asked for (config, names, files), not a bug."""


class ConfigError(MeigmError):
    """An unknown key, a wrong type or an out-of-range value in a config."""
