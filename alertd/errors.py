"""Every exception alertd raises on purpose.

    AlertdError                 base: catch this at the edges (CLI, API, loops)
    ├── ConfigError             a config, rule or channel file is wrong (file=, key=)
    │   └── ConfigErrors        several ConfigErrors found in one load
    ├── EventError              a stream entry or API event is malformed (reason)
    ├── DeliveryError           one delivery attempt failed (channel=, retryable)
    └── NotFoundError           an id (silence, dead letter, channel) that does not exist

Messages are one line and never contain a secret.
"""

from __future__ import annotations


class AlertdError(Exception):
    """Base of every error alertd raises on purpose."""


class ConfigError(AlertdError):
    """A configuration, rule or channel file is invalid."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.message = message
        self.file = file
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or ""
        if self.key:
            where = f"{where}: {self.key}" if where else self.key
        text = f"{where}: {self.message}" if where else self.message
        # One error, one line: names from a file may hold newlines.
        return text.replace("\r", "\\r").replace("\n", "\\n")


class ConfigErrors(ConfigError):
    """Several configuration errors, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)


class EventError(AlertdError):
    """An event breaks the event format (docs/publishing.md); `reason` says which rule it breaks.

    `code` is the kind, machine-readable and from a small fixed set (EVENT_ERROR_CODES): the
    `reason` label of `alertd_events_invalid_total`.
    """

    def __init__(self, reason: str, *, code: str = "invalid", index: int | None = None) -> None:
        self.reason = reason
        self.code = code
        self.index = index
        super().__init__(reason if index is None else f"[{index}] {reason}")


EVENT_ERROR_CODES = frozenset(
    {
        "invalid",  # none of the below (a client-side check, say)
        "invalid_json",
        "invalid_form",  # neither the flat nor the JSON form, or not an object
        "unknown_field",
        "invalid_name",
        "invalid_value",
        "invalid_labels",
        "invalid_ts",
        "too_large",
        "too_many",
        "invalid_utf8",
        "internal",  # a bug in the parser: the entry is dead-lettered, the stream goes on
    }
)


class DeliveryError(AlertdError):
    """One delivery attempt failed.

    `retryable` comes from the shared classifier (alertd.notify.retry); `retry_after_s`
    is the receiver's own `Retry-After`, a lower bound on the next wait.
    """

    def __init__(
        self,
        message: str,
        *,
        channel: str = "",
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        self.message = message
        self.channel = channel
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotFoundError(AlertdError):
    """The thing asked for does not exist."""
