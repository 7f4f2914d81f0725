"""Domain errors. Each carries a clear one-line message; they are mapped to exit codes and HTTP
statuses once, in the CLI root and the API app."""

from __future__ import annotations


class KeyledgerError(Exception):
    """Base of every error a user may see. ``str(err)`` is the one-line message."""

    http_status = 400
    title = "Bad request"


class Invalid(KeyledgerError):
    """The input is wrong (bad date, unknown option, malformed file)."""

    http_status = 422
    title = "Invalid input"


class NotFound(KeyledgerError):
    """The thing named does not exist (or is not visible to the caller)."""

    http_status = 404
    title = "Not found"


class Conflict(KeyledgerError):
    """The request clashes with the current state (duplicate name, finalized invoice, lease held)."""

    http_status = 409
    title = "Conflict"


class ProviderError(KeyledgerError):
    """Deepgram (or dgemu) refused the call, or could not be reached after retries."""

    http_status = 502
    title = "Provider error"


class ProviderAuthError(ProviderError):
    """Deepgram rejected the credentials or their scopes."""
