"""Checks of public arguments, so that a wrong one is refused here, by its
Python name, before anything is sent."""
from typing import Any, Optional

from .errors import InvalidRequest


def name(value: Any, what: str) -> str:
    """A provider name: a non-empty str."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{what} must not be empty")
    return value


def opt_id(value: Any, what: str) -> Optional[str]:
    """A workflow or tenant id, or None."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not "
                        f"{type(value).__name__}")
    return value


def count(value: Any, what: str) -> int:
    """A whole number of tokens, 0 or more."""
    if type(value) is not int or value < 0:
        raise InvalidRequest(f"{what} must be an int >= 0, not {value!r}")
    return value


def seconds(value: Any, what: str) -> float:
    """A time in seconds, 0 to a day."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value < 86400):
        raise InvalidRequest(f"{what} must be seconds from 0 to 86400, not "
                             f"{value!r}")
    return float(value)
