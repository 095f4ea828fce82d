"""The one exception type that the CLI turns into a clear message and exit status 2."""


class UserError(Exception):
    """Bad input from the user: a file, an option, a dataset or a run folder.

    The CLI prints ``error: <message>`` on one line and exits with status 2;
    library code raises it instead of letting a traceback reach the user.
    """
