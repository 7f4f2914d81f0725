"""Standard Webhooks signing checked against the independent ``standardwebhooks`` implementation, and the
SSRF guard's address classes."""

from __future__ import annotations

import socket
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from keyledger.core.errors import Invalid
from keyledger.notifications import signing, ssrf


def test_signature_matches_the_reference_implementation():
    secret = signing.new_secret()
    ts = int(time.time())
    body = b'{"type":"key.created","data":{"key_id":"key_1"}}'
    ours = signing.sign(secret, "msg_1", ts, body)
    from datetime import UTC, datetime

    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), body.decode())
    assert ours == theirs
    Webhook(secret).verify(body, signing.headers(secret, "msg_1", ts, body))


def test_our_verifier_rejects_what_a_receiver_must_reject():
    secret = signing.new_secret()
    now = int(time.time())
    h = signing.headers(secret, "msg_2", now, b"{}")
    signing.verify(secret, h, b"{}", now=now)
    for args in (
        (secret, h, b"{ }", now),  # tampered body
        (signing.new_secret(), h, b"{}", now),  # wrong secret
        (secret, h, b"{}", now + 600),  # stale timestamp
    ):
        with pytest.raises(signing.SignatureError):
            signing.verify(args[0], args[1], args[2], now=args[3])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b"{}", dict(h, **{"webhook-timestamp": str(now - 3600)}))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.1.1/",
        "http://172.16.0.5/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_non_public_addresses_are_refused(url):
    with pytest.raises(ssrf.Refused):
        ssrf.check(url, allow_private=False)
    ssrf.check(url, allow_private=True)


def test_public_address_passes(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))],
    )
    ssrf.check("https://hooks.example.com/x", allow_private=False)


@pytest.mark.parametrize("url", ["ftp://x/", "notaurl", "http://user:pw@host/", "https:///path"])
def test_bad_urls(url):
    with pytest.raises(Invalid):
        ssrf.validate_url(url)
