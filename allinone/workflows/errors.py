"""ASL error names and the exception that carries one through the interpreter.

A :class:`StatesError` is what a state fails with: an ``error`` name (``States.*`` or,
for a function that raised, the Python exception's type name such as ``ValueError``)
and a human ``cause``. Retriers and catchers match on the name (:func:`matches`).
"""

from __future__ import annotations

ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
RUNTIME = "States.Runtime"
NO_CHOICE = "States.NoChoiceMatched"
DATA_LIMIT = "States.DataLimitExceeded"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
BRANCH_FAILED = "States.BranchFailed"
PERMISSIONS = "States.Permissions"

# Errors that no retrier or catcher can handle: the execution fails (as in Step Functions,
# where States.ALL does not match States.Runtime or States.DataLimitExceeded).
TERMINAL = frozenset({RUNTIME, DATA_LIMIT})


class StatesError(Exception):
    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


def matches(error_equals: list[str], error: str) -> bool:
    """Does a retrier's/catcher's ``ErrorEquals`` cover ``error``?"""
    if error in TERMINAL:
        return error in error_equals
    if error in error_equals or ALL in error_equals:
        return True
    # States.TaskFailed names any failure of a task other than a timeout.
    return TASK_FAILED in error_equals and error != TIMEOUT
