"""Key management, access verification and grant tokens over Deepgram's management API.

Wire shapes (API_NOTES §2.2): the list nests each key as ``{member, api_key: {...}}`` and may leave
out ``tags``/``expiration_date``; only the create response carries the secret ``key``. Key creation
is sent once (``retry=False``): a blind retry could create a second key; the keys service recovers an
ambiguous create by finding its operation id in the project's keys instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from keyledger.core.errors import ProviderAuthError, ProviderError
from keyledger.provider.deepgram.http import DeepgramHTTP
from keyledger.provider.port import AccessReport, CreatedKey, Grant, ProviderKey

PROBE_TAG = "keyledger:access-check"


def _parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_from(data: dict[str, Any]) -> ProviderKey:
    return ProviderKey(
        api_key_id=str(data.get("api_key_id", "")),
        comment=str(data.get("comment") or ""),
        scopes=tuple(data.get("scopes") or ()),
        tags=tuple(data.get("tags") or ()),
        created=_parse_time(data.get("created")),
        expires_at=_parse_time(data.get("expiration_date")),
    )


class KeysAPI:
    http: DeepgramHTTP

    # ------------------------------------------------------------------ access check

    def _can(self, method: str, path: str, **kwargs: Any) -> bool:
        try:
            self.http.request(method, path, **kwargs)
        except ProviderAuthError:
            return False
        return True

    def verify_access(self) -> AccessReport:
        """Check, with real calls, that the key can manage keys and read usage and billing.

        Reads are probed directly. ``keys:write`` has no read-only probe, so a short-lived
        ``usage:write`` key tagged ``keyledger:access-check`` is created and deleted at once
        (it expires within ten minutes even if the delete were lost).
        An invalid key or a missing project raises ProviderError; missing permissions are reported.
        """
        base = self.http.project_path
        self.http.request("GET", base)  # invalid key / unknown project: raises with a clear message
        missing: list[str] = []
        can_read_keys = self._can("GET", f"{base}/keys")
        if not can_read_keys:
            missing.append("keys:read")
        can_write_keys = False
        if can_read_keys:
            try:
                probe = self.create_key(
                    comment="keyledger access check (deleted immediately)",
                    scopes=["usage:write"],
                    tags=["keyledger", PROBE_TAG],
                    expires_at=datetime.now(UTC) + timedelta(minutes=10),
                )
            except ProviderAuthError:
                missing.append("keys:write")
            else:
                can_write_keys = True
                self.delete_key(probe.api_key_id)
        can_read_usage = self._can("GET", f"{base}/requests", params={"limit": 1})
        if not can_read_usage:
            missing.append("usage:read")
        today = datetime.now(UTC).date().isoformat()
        can_read_billing = self._can(
            "GET", f"{base}/billing/breakdown", params={"start": today, "end": today}
        )
        if not can_read_billing:
            missing.append("billing:read")
        return AccessReport(
            can_manage_keys=can_read_keys and can_write_keys,
            can_read_usage=can_read_usage,
            can_read_billing=can_read_billing,
            missing=tuple(missing),
        )

    # ------------------------------------------------------------------ keys

    def list_keys(self) -> list[ProviderKey]:
        body = self.http.request("GET", f"{self.http.project_path}/keys") or {}
        result = []
        for entry in body.get("api_keys") or []:
            data = entry.get("api_key") if isinstance(entry, dict) and "api_key" in entry else entry
            if isinstance(data, dict) and data.get("api_key_id"):
                result.append(_key_from(data))
        return result

    def create_key(
        self,
        *,
        comment: str,
        scopes: list[str],
        tags: list[str],
        expires_at: datetime | None = None,
        ttl_seconds: int | None = None,
    ) -> CreatedKey:
        payload: dict[str, Any] = {"comment": comment, "scopes": list(scopes), "tags": list(tags)}
        if expires_at is not None:
            payload["expiration_date"] = _iso(expires_at)
        elif ttl_seconds is not None:
            payload["time_to_live_in_seconds"] = int(ttl_seconds)
        body = self.http.request("POST", f"{self.http.project_path}/keys", json=payload, retry=False)
        if not isinstance(body, dict) or not body.get("api_key_id") or not body.get("key"):
            raise ProviderError("Deepgram key creation answered without a key id or secret")
        base = _key_from(body)
        return CreatedKey(
            api_key_id=base.api_key_id,
            comment=base.comment or comment,
            scopes=base.scopes or tuple(scopes),
            tags=base.tags or tuple(tags),
            created=base.created,
            expires_at=base.expires_at or expires_at,
            secret=str(body["key"]),
        )

    def delete_key(self, api_key_id: str) -> None:
        """Delete a key; a key that is already gone counts as deleted (checked against the list)."""
        try:
            self.http.request("DELETE", f"{self.http.project_path}/keys/{api_key_id}")
        except ProviderAuthError:
            raise
        except ProviderError:
            if any(k.api_key_id == api_key_id for k in self.list_keys()):
                raise
            # Not listed any more: already deleted (e.g. a retried DELETE, or removed in the console).

    # ------------------------------------------------------------------ browser tokens

    def grant_token(self, *, ttl_seconds: int | None = None) -> Grant:
        payload = {} if ttl_seconds is None else {"ttl_seconds": int(ttl_seconds)}
        body = self.http.request("POST", "/v1/auth/grant", json=payload) or {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ProviderError("Deepgram grant answered without an access token")
        return Grant(access_token=str(token), expires_in=int(body.get("expires_in") or 30))
