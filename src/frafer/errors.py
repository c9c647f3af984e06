"""The one exception type for mistakes a user can make (bad path, bad key, bad file)."""


class FraferError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with status 2."""
