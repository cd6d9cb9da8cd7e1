"""The one exception type users see: a one-line message naming the file and the problem."""


class VqtokError(Exception):
    """A user-facing error (bad file, bad config, mismatched model).

    The CLI prints ``str(err)`` on one line and exits with code 2; the message must name the
    file or value at fault and, where possible, how to fix it.
    """
