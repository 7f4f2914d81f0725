"""Request bodies (validated by pydantic; unknown fields are refused so typos do not pass silently)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

# Deepgram keys and project ids travel in HTTP headers and paths: printable ASCII only.
SECRET = r"^[\x21-\x7e]+$"
PROJECT = r"^[A-Za-z0-9_.:-]+$"
PERIOD = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"
DECIMAL = r"^[0-9]+(\.[0-9]+)?$"  # an exact, non-negative decimal as text: 250.00


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CustomerCreate(Body):
    name: str = Field(min_length=1, max_length=300)
    external_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\s,]+$")
    email: str | None = Field(None, max_length=300)
    plan: str | None = Field(None, max_length=100)
    currency: str = Field("USD", min_length=3, max_length=3)
    timezone: str = Field("UTC", min_length=1, max_length=64)


class CustomerUpdate(Body):
    name: str | None = Field(None, min_length=1, max_length=300)
    external_id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\s,]+$")
    email: str | None = Field(None, max_length=300)
    plan: str | None = Field(None, max_length=100)
    currency: str | None = Field(None, min_length=3, max_length=3)
    timezone: str | None = Field(None, min_length=1, max_length=64)


class SuspendBody(Body):
    revoke_keys: bool = True


class ReinstateBody(Body):
    recreate_keys: bool = True


class KeyCreate(Body):
    connection: str | None = Field(None, max_length=200, description="Connection name or id.")
    ttl: str | None = Field(None, max_length=20, description="e.g. 90d, 12h, 3600s; none: no expiry.")
    scopes: list[str] | None = Field(None, max_length=20, description="Default: usage:write.")
    comment: str | None = Field(None, max_length=200)


class GrantCreate(Body):
    ttl_seconds: int | None = Field(None, ge=1, le=3600, description="Deepgram's limit: 1 to 3600.")


class PortalTokenCreate(Body):
    customer_id: str = Field(min_length=1, max_length=200, description="Customer id or external id.")
    ttl_seconds: int | None = Field(None, ge=1, le=30 * 24 * 3600)


class ByoConnect(Body):
    project_id: str = Field(min_length=1, max_length=100, pattern=PROJECT)
    api_key: str = Field(min_length=1, max_length=200, pattern=SECRET,
                         description="Used once to verify and mint; discarded.")


class ByoDisconnect(Body):
    api_key: str | None = Field(
        None, min_length=1, max_length=200, pattern=SECRET,
        description="Optional: a key of the project with keys:write, used once to delete the minted key.",
    )


class ConnectionCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    project_id: str = Field(min_length=1, max_length=100, pattern=PROJECT)
    api_key: str = Field(min_length=1, max_length=200, pattern=SECRET,
                         description="Stored encrypted; never shown again.")
    base_url: str | None = Field(None, max_length=500)


class SyncRunCreate(Body):
    connection: str | None = Field(None, max_length=200)
    since: str | None = Field(None, min_length=1, max_length=40, description="Date or ISO date-time (UTC).")
    until: str | None = Field(None, min_length=1, max_length=40,
                              description="Date (inclusive) or ISO date-time (UTC).")


class InvoiceRunCreate(Body):
    period: str = Field(pattern=PERIOD, description="YYYY-MM")
    customer: str | None = Field(None, max_length=200)
    finalize: bool = False


class VoidBody(Body):
    reason: str | None = Field(None, max_length=500)


class CreditNoteCreate(Body):
    reason: str = Field(min_length=1, max_length=500, description="Why (printed on the credit note).")
    amount: str | None = Field(
        None, max_length=40, pattern=DECIMAL,
        description="Exact decimal before tax (tax at the invoice's rate is added), e.g. 12.50.",
    )
    lines: list[Annotated[StrictInt, Field(ge=1)]] | None = Field(
        None, min_length=1, max_length=1000, description="Whole lines to credit, by position (1, 2, ...).",
    )

    @model_validator(mode="after")
    def _one_way(self) -> CreditNoteCreate:
        if self.amount is not None and self.lines is not None:
            raise ValueError("give an amount or lines to credit, not both (neither: everything left)")
        return self


class BudgetSet(Body):
    limit: str = Field(max_length=40, pattern=DECIMAL, description="Exact decimal: 250.00")
    period: str = Field("month", max_length=20)
    thresholds: list[int] | None = Field(None, max_length=10, description="Percentages; default 50, 80, 100.")
    action: str = Field("notify", max_length=20, description="notify or revoke")


class WebhookCreate(Body):
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] | None = Field(None, max_length=20, description="Default: every event type.")
