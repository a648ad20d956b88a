"""One exception hierarchy for statecli, each class carrying the exit code the CLI returns."""

from __future__ import annotations

import re
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in `statecli --help` and the README."""

    OK = 0  # success / equal / pass
    DIFFERENT = 1  # differences found or rule failures
    BAD_INPUT = 2  # bad usage or unreadable input
    UNSAFE = 3  # unsafe content refused
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports a process SIGINT ended
    TERMINATED = 143  # SIGTERM (128 + SIGTERM): what `kill`, systemd and CI runners' timeouts expect


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal arrives so every cleanup (`finally`, the atomic writers' temp
    removal) runs as it does for Ctrl-C; the CLI then exits 143, not Ctrl-C's 130."""


class KeptInterrupt(KeyboardInterrupt):
    """Ctrl-C or SIGTERM after a run kept part of its output on purpose (a batch run's finished records):
    the CLI says what was kept instead of "nothing was written", with the signal's exit code."""

    def __init__(self, kept: str, terminated: bool) -> None:
        super().__init__(kept)
        self.kept = kept
        self.terminated = terminated


class StatecliError(Exception):
    """Base of every error statecli reports as one line instead of a traceback."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, path: object, problem: str, hint: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        head = f"{self.path}: {self.problem}" if self.path else self.problem
        return f"{head}; {self.hint}" if self.hint else head


class BadInput(StatecliError):
    """The input is missing, unreadable, corrupt or not a checkpoint."""


class NotACheckpoint(BadInput):
    """The input reads fine but is no checkpoint (an image, a bare pickle, a numpy array): callers that
    must tell this from a broken checkpoint test the class, never the message."""


class NotFound(BadInput):
    """The input does not exist (no such file, a 404): a caller probing for a file tests the class."""


class UnsafeContent(StatecliError):
    """The input references code that loading would execute (a known-dangerous pickle global)."""

    exit_code = ExitCode.UNSAFE


class UsageError(StatecliError):
    """Options that do not fit together or do not fit this input."""


def user_regex(pattern: str, what: str, flags: int = 0) -> re.Pattern[str]:
    """`pattern` (given by the user as `what`: an option, a rule) compiled, or one usage error naming
    it: a bad regex is a mistake on the command line, never a traceback."""
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise UsageError(None, f"{what} {pattern!r} is not a valid regular expression: {exc}") from exc
