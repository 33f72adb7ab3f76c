"""``DataError``, the one error bad data raises; apart from the readers so that light modules
(specs, text, series) can raise it without importing pandas."""


class DataError(ValueError):
    """Raw data that cannot be used; the message names the file and the problem."""
