"""The one base class of the mistakes a user fixes by changing a command, a parameter or a file.

Every command of the project (``kedro run`` / ``eagle-pipelines``, ``eagle-explain``, ``eagle-compare``) prints a
``UserError`` as one line (its message names the file or value and the fix) and exits with status 2, without a
traceback; ``EAGLE_TRACEBACK=1`` (or ``eagle-compare --verbose``) shows the traceback as well. The module
imports nothing, so ``core/`` may use it.
"""

from __future__ import annotations

import os

#: set to 1 to see the traceback of a user error as well as its message
TRACEBACK_VARIABLE = "EAGLE_TRACEBACK"


class UserError(Exception):
    """A wrong command, parameter or input file: the message names it and says how to fix it."""


def show_traceback() -> bool:
    """Whether the environment asks for the traceback of user errors (``EAGLE_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")

