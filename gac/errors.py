"""The one exception type for user mistakes.

A `GacError` is something the user can fix (a file, a param, a layout). The CLI
prints its message as one line and exits non-zero; every other exception is a
bug and keeps its traceback.
"""


class GacError(Exception):
    """A user-fixable problem; the message names the file or key, the problem and the fix."""
