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


def check_range(
    section: str, name: str, value: float, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> None:
    """The range check of a config field: ConfigError "section.name: expected <range>, got <value>" unless
    low <= value (low < value with `low_open`) and value <= high (value < high with `high_open`); a bound left
    None is open-ended, and NaN is never in range."""
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    if above and below:
        return
    if low is not None and high is not None:
        expected = f"a value in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"{'>' if low_open else '>='} {low}"
    else:
        expected = f"{'<' if high_open else '<='} {high}"
    raise ConfigError(f"{section}.{name}: expected {expected}, got {value!r}")


def check_choice(section: str, name: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    """The choice check of a config field: ConfigError "section.name: expected one of a|b, got 'c'"."""
    if value not in choices:
        raise ConfigError(f"{section}.{name}: expected one of {'|'.join(choices)}, got {value!r}")
