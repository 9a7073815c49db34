"""Error types. ``UserInputError`` and its subclasses mean "fix your input" (CLI exit code 2)."""


class UserInputError(Exception):
    """Bad input from the user: config, data file or agent class. The message says what to fix."""


class ConfigError(UserInputError):
    """The fleet config file is unreadable or invalid."""


class DataError(UserInputError):
    """A market-data file is missing or holds records the feed was told not to skip."""


class AgentLoadError(UserInputError):
    """An agent class cannot be found, imported, or does not accept its parameters."""


class LedgerError(Exception):
    """The ledger cannot be opened or written."""
