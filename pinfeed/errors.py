"""One exception hierarchy for the project; the CLI and the HTTP edge map it to exit codes and
status codes, so library code never prints or exits."""

from __future__ import annotations


class PinfeedError(Exception):
    """Base class: every error the project raises on purpose."""


class ConfigError(PinfeedError):
    """A config value is missing, out of range or inconsistent. The message names the field."""


class SchemaError(PinfeedError):
    """A table does not match its contract (missing column, wrong type)."""


class ValidationError(PinfeedError):
    """Rows break the contract. `problems` holds (row, field, reason) triples, the first few of
    which are in the message."""

    def __init__(self, table: str, problems: list[tuple[int, str, str]], total: int | None = None):
        self.table = table
        self.problems = problems
        self.total = total if total is not None else len(problems)
        shown = "; ".join(f"row {row}: {field}: {reason}" for row, field, reason in problems[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{table}: {self.total} bad row(s): {shown}{more}")


class DataNotFoundError(PinfeedError):
    """An input the step needs has not been produced yet; the message names the command that
    produces it."""


class UnavailableError(PinfeedError):
    """A store (Redis, a log file) did not answer: nothing was done, and retrying may succeed
    (the HTTP edge answers 503 with `Retry-After`)."""
