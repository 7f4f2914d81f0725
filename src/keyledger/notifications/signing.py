"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

- secret: ``whsec_`` + base64 of 24–64 random bytes; the HMAC key is the decoded bytes;
- signed content: ``{webhook-id}.{webhook-timestamp}.{body}``;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` (space-separated when several secrets sign).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


class SignatureError(Exception):
    pass


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise SignatureError("webhook secret is not base64 after whsec_") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "keyledger-webhooks/1",
    }


def verify(secret: str, hdrs: dict[str, str], body: bytes, *, now: int) -> None:
    """What a receiver does: raises SignatureError unless the signature and the timestamp are good."""
    low = {k.lower(): v for k, v in hdrs.items()}
    try:
        msg_id, ts_text, sigs = low["webhook-id"], low["webhook-timestamp"], low["webhook-signature"]
    except KeyError as exc:
        raise SignatureError(f"missing header {exc.args[0]}") from None
    if not ts_text.isdigit():
        raise SignatureError("bad timestamp")
    ts = int(ts_text)
    if abs(now - ts) > TOLERANCE_SECONDS:
        raise SignatureError("timestamp outside the tolerance")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for part in sigs.split():
        version, _, value = part.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no matching signature")
