"""The one family of exceptions for bad input (a leaf module: it imports nothing).

An error a user can fix -- a malformed data file, a corrupt assistant folder, an option
that cannot be used -- is a ``UserError`` whose message is one line that names the problem
and the fix. The command line (``minillava.cli``) prints it as ``minillava <cmd>: <message>``
and exits with status 2, without a traceback; any other exception is a bug and keeps its
traceback. It subclasses ValueError, so code that catches ValueError still catches it.
"""


class UserError(ValueError):
    """Input that cannot be used; the message names the problem and the fix in one line."""
