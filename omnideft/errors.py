"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (file, flag, recipe key, model id). The message names the culprit."""

    exit_code = 2
