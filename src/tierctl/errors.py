"""User-facing failures: one class per failure, each with a hint and an exit code.

The CLI prints ``error: <message>`` and ``hint: <hint>`` for any :class:`TierctlError`
and exits with its ``exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # `plan --detailed-exitcode`: changes pending
EXIT_PARTIAL = 3  # `apply`: some actions failed or were skipped
EXIT_LOCKED = 4  # another process holds the index
EXIT_SOFTWARE = 70  # a bug (EX_SOFTWARE): the traceback is printed
EXIT_INTERRUPTED = 130  # Ctrl-C: finished work is recorded


@dataclass(frozen=True)
class Location:
    """A place in a file, 1-based line and column."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class TierctlError(Exception):
    """Base of every failure that is the user's or the environment's, not a bug."""

    exit_code: int = EXIT_ERROR
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str = "", location: Location | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(TierctlError):
    """The policy file is missing, malformed or inconsistent."""


class ConfigErrors(ConfigError):
    """Several problems found in one policy file; each is a located ConfigError."""

    def __init__(self, problems: list[ConfigError]):
        first = problems[0]
        super().__init__(first.message, hint=first.hint, location=first.location)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ExpressionError(ConfigError):
    """A `when` expression does not parse; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, *, column: int, expression: str, hint: str = ""):
        super().__init__(message, hint=hint)
        self.column = column
        self.expression = expression


class DeleteLimitExceeded(TierctlError):
    """A plan would expire more objects than a policy's ``max_delete`` allows."""

    default_hint = "check the policy's delete rules; if the deletes are intended, pass --force"


class UnknownName(TierctlError):
    """A dataset, tier or object named on the command line does not exist."""


class PlanFileError(TierctlError):
    """A saved plan cannot be read, was tampered with, or was made for another config."""


class IndexUnusable(TierctlError):
    """The index file is unusable (newer schema, corrupt, not a tierctl index)."""


class IndexLocked(TierctlError):
    """Another process holds the index for writing."""

    exit_code = EXIT_LOCKED


class MoverError(TierctlError):
    """A storage operation failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False, hint: str = ""):
        super().__init__(message, hint=hint)
        self.retryable = retryable


class ObjectNotFound(MoverError):
    """The object does not exist on that tier."""


class ObjectExists(MoverError):
    """A write that must create its object found one already there (``write(if_absent=True)``)."""


class ObjectChanged(MoverError):
    """The object is not what the plan expected (changed since it was planned)."""


class ObjectArchived(MoverError):
    """The object is in an archive storage class and must be restored before it is read."""

    default_hint = "restore it first (tierctl plans a restore action for archived sources)"


class VerificationFailed(MoverError):
    """A copy's digest does not match the source's: the copy is not trusted."""


class UnsafeKey(MoverError):
    """A key would escape its tier's root or holds characters tierctl refuses."""


class MissingDependency(TierctlError):
    """An optional package that a tier's URL scheme needs is not installed."""
