"""Exceptions the solver raises for input it cannot fit; each names the parameter at fault."""

from __future__ import annotations


class EMError(Exception):
    """Base class: the request cannot be fitted as asked.

    ``field`` is the dotted path of the offending parameter (``"init.means"``), so a caller can
    point at it; ``message`` says what was expected and what came.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidParameterError(EMError, ValueError):
    """A parameter has the wrong shape or an impossible value (e.g. a covariance that is not positive definite)."""


class DegenerateDataError(EMError, ValueError):
    """The data cannot support the model (e.g. more components than distinct points)."""
