"""The provider port: a Protocol and plain dataclasses. Services depend on this, never on HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple, Protocol


@dataclass(frozen=True)
class ProviderCredentials:
    base_url: str
    project_id: str
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class ProviderKey:
    api_key_id: str
    comment: str
    scopes: tuple[str, ...]
    tags: tuple[str, ...] = ()
    created: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class CreatedKey(ProviderKey):
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class AccessReport:
    """What the connection's key may do; ``missing`` names what it lacks (empty when all is well)."""

    can_manage_keys: bool
    can_read_usage: bool
    can_read_billing: bool
    missing: tuple[str, ...] = ()


class UsageRecord(NamedTuple):
    """One Deepgram request, as the ledger stores it. Quantities and costs are exact decimals.

    A NamedTuple rather than a frozen dataclass: a sync builds millions of these, and a tuple is built
    several times faster (immutable all the same)."""

    request_id: str
    api_key_id: str
    created: datetime
    endpoint: str  # listen | speak | read | agent
    method: str  # sync | async | streaming
    model: str
    line_item: str  # e.g. streaming::nova-3
    unit: str  # minute | character | token
    quantity: Decimal
    cost_usd: Decimal
    code: int | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestsPage:
    records: list[UsageRecord]
    page: int
    limit: int
    returned: int  # items on the wire (a short page ends the listing)


@dataclass(frozen=True)
class BillingRow:
    """One row of Deepgram's billing breakdown: authoritative dollars for a day, accessor, line item."""

    start: date
    end: date
    accessor: str | None
    line_item: str | None
    dollars: Decimal


@dataclass(frozen=True)
class Grant:
    access_token: str = field(repr=False)
    expires_in: int = 30


class Provider(Protocol):
    """One Deepgram project, reached with one key. Every method raises ProviderError on failure."""

    def verify_access(self) -> AccessReport: ...

    def list_keys(self) -> list[ProviderKey]: ...

    def create_key(
        self,
        *,
        comment: str,
        scopes: list[str],
        tags: list[str],
        expires_at: datetime | None = None,
        ttl_seconds: int | None = None,
    ) -> CreatedKey: ...

    def delete_key(self, api_key_id: str) -> None:
        """Delete a key; deleting a key that is already gone is not an error."""
        ...

    def use_line_items(self, names: list[str]) -> None:
        """The billing line-item names (from ``line_item_labels``) that request records map onto."""
        ...

    def list_requests(self, *, start: datetime, end: datetime, page: int, limit: int) -> RequestsPage:
        """One page of the request log between start and end, newest first (0-based page)."""
        ...

    def iter_requests(self, *, start: datetime, end: datetime, limit: int) -> Iterator[RequestsPage]: ...

    def iter_failed_requests(self, *, start: datetime, end: datetime, limit: int) -> Iterator[RequestsPage]:
        """Like ``iter_requests``, only the failed requests (status ``failed``: code ≥ 300)."""
        ...

    def daily_request_counts(self, *, start: date, end: date) -> dict[date, int]:
        """Succeeded requests per UTC day (inclusive dates; days without any are absent), from the usage
        breakdown: a cheap way to tell which days of the request log changed."""
        ...

    def billing_breakdown(self, *, start: date, end: date) -> list[BillingRow]:
        """Billing breakdown grouped by accessor and line item, daily rows, inclusive dates."""
        ...

    def line_item_labels(self, *, start: date, end: date) -> dict[str, str]: ...

    def grant_token(self, *, ttl_seconds: int | None = None) -> Grant: ...

    def close(self) -> None: ...


ProviderFactory = Callable[[ProviderCredentials], Provider]
