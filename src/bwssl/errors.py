"""Errors caused by user input: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input (config, files, data) that the user must fix; the message says how."""


class DataError(UserError):
    """A dataset cannot be used as given (missing files, too many unreadable clips)."""


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


class RunStopped(Exception):
    """A run stopped on a signal (SIGINT, SIGTERM) after saving a checkpoint at its current
    step; ``code`` is the exit status (128 + the signal's number)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
