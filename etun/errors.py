"""Error classes: each carries its one-line message and the exit code cli.main() turns it into."""


class EtunError(Exception):
    """A failure the user can act on; never shown with a traceback."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RuntimeFailure(EtunError):
    """The environment failed at run time: interface gone, socket error, daemon absent."""

    exit_code = 1


class UsageError(EtunError):
    """The command line itself is wrong."""

    exit_code = 2


class ConfigError(EtunError):
    """site.toml is unreadable, malformed or invalid."""

    exit_code = 2


class KeyFileError(EtunError):
    """The key material file is missing, the wrong size, too open, or must not be overwritten."""

    exit_code = 2


class VerifyProblem(EtunError):
    """verify-peer ran and found at least one problem."""

    exit_code = 3
