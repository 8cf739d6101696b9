"""User errors: bad files, bad configs, bad sweeps. `fersweep` prints them as one line and exits with status 2."""


class UserError(Exception):
    """An error in what the user gave us (a file, a config value, a sweep), not a bug in fercore."""


class DataError(UserError):
    """A data file that cannot be read as promised; the message names the file and the line or image."""


class ConfigError(UserError):
    """A config key or value that is unknown or out of range; the message names the key and the valid choices."""
