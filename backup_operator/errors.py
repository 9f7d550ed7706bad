"""Domain errors. The API and the operator translate them; the domain only raises."""

from __future__ import annotations


class DomainError(Exception):
    """An error about a request, naming the field at fault where there is one."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Invalid(DomainError):
    code = "invalid"


class Unavailable(Exception):
    """A dependency (PostgreSQL or the object store) cannot be reached; retry later."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} is unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail
