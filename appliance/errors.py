"""User-facing errors: each carries one sentence for the operator and an exit code."""


class UserError(Exception):
    """A problem the user can fix (bad option, missing input, missing capability); printed without a traceback."""

    exit_code = 2


class InputError(UserError):
    """An input file is missing, unreadable or of an unknown format."""

    exit_code = 3
