"""Exception types of the package.

Every error that a user can cause with bad input is a `SpreadError`; messages name the file, column and row
involved so that the fix is obvious without a traceback.
"""


class SpreadError(Exception):
    """Base class of every error raised on purpose by `spread`."""


class DataError(SpreadError):
    """A competition file (or a price table) is missing, malformed or inconsistent."""


class ConfigError(SpreadError):
    """A configuration file or a command-line override is invalid."""


class ArtifactError(SpreadError):
    """A run folder, checkpoint or manifest is missing, corrupt or does not match its checksums."""
