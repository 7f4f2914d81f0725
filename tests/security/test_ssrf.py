"""SSRF: webhook URLs naming loopback, private, link-local, shared or IPv6-local addresses, in every literal
form a resolver accepts, ``localhost`` names, userinfo tricks and non-http schemes are refused at creation
(API 422 problem+json, CLI one line, nothing stored) and at delivery (an attempt logged as refused) — with
``webhook_allow_private_networks`` off. Nothing ever connects: a loopback listener on the port the
loopback forms name counts zero connections, and delivery runs over a transport that never connects."""

from __future__ import annotations

import pytest

from keyledger.core.crypto import Cipher, generate_key
from keyledger.notifications.service import Deliverer, WebhookService
from tests.api.conftest import problem_ok
from tests.security.cli_batch import run_batch
from tests.security.support import Listener, NoConnectTransport, db_snapshot, snapshot_diff
from tests.service.test_webhooks_delivery import clock as clock  # noqa: F401 - fixture
from tests.service.test_webhooks_delivery import emit

# Hosts that reach the listener if a guard fails ({port} is its port).
LOOPBACK = [
    "http://127.0.0.1:{port}/h",
    "http://localhost:{port}/h",
    "http://hooks.localhost:{port}/h",
    "http://LOCALHOST.:{port}/h",
    "http://[::1]:{port}/h",
    "http://[::ffff:127.0.0.1]:{port}/h",
    "http://[::ffff:7f00:1]:{port}/h",
    "http://2130706433:{port}/h",  # decimal
    "http://017700000001:{port}/h",  # octal
    "http://0x7f000001:{port}/h",  # hex
    "http://0x7f.0.0.1:{port}/h",
    "http://0177.0.0.01:{port}/h",
    "http://127.1:{port}/h",
    "http://0:{port}/h",  # 0.0.0.0
    "http://[::]:{port}/h",
    "https://127.0.0.1:{port}/h",
    "http://127.0.0.1:{port}#@hooks.example.com/",
    "http://127.0.0.1:{port}?@hooks.example.com/",
]
# Non-loopback private, link-local, shared and IPv6-local addresses (never contacted).
PRIVATE = [
    "http://10.0.0.1/h",
    "http://172.16.0.1/h",
    "http://192.168.1.1/h",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 in decimal
    "http://100.64.0.1/h",  # shared address space (CGNAT)
    "http://[fc00::1]/h",
    "http://[fd12:3456::1]/h",
    "http://[fe80::1]/h",
    "http://[::ffff:10.0.0.1]/h",
    "http://[::ffff:169.254.169.254]/h",
    "http://224.0.0.1/h",
    "http://255.255.255.255/h",
]
# Refused whatever the network setting: userinfo and schemes other than http(s).
MALFORMED = [
    "http://hooks.example.com@127.0.0.1:{port}/h",
    "http://user:pw@hooks.example.com/h",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_x",
    "dict://127.0.0.1:{port}/",
    "ftp://127.0.0.1:{port}/",
    "javascript:alert(1)",
    "//127.0.0.1:{port}/h",
    "http:///h",
    "",
]
ALL = LOOPBACK + PRIVATE + MALFORMED


@pytest.fixture
def listener():
    lis = Listener()
    yield lis
    lis.close()


def test_api_refuses_every_non_public_webhook_url_before_storing_or_connecting(api, listener):
    assert api.runtime.settings.webhook_allow_private_networks is False
    before = db_snapshot(api.runtime.engine)
    with api.client() as c:
        for template in ALL:
            url = template.format(port=listener.port)
            body = problem_ok(c.post("/webhook-endpoints", json={"url": url}), 422)
            assert "webhook URL" in body["detail"] or "url" in str(body).lower(), (url, body)
        assert c.get("/webhook-endpoints").json()["data"] == []
    assert snapshot_diff(before, db_snapshot(api.runtime.engine)) == {}
    assert listener.connections == 0


def test_cli_refuses_every_non_public_webhook_url_in_one_line(kl_env, engine, listener):
    before = db_snapshot(engine)
    urls = [t.format(port=listener.port) for t in ALL]
    results = run_batch([["webhooks", "add", u] for u in urls], kl_env.env, kl_env.path)
    for url, res in zip(urls, results, strict=True):
        assert res["code"] == 1, (url, res)
        lines = res["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (url, res)
    assert snapshot_diff(before, db_snapshot(engine)) == {}
    assert listener.connections == 0
    # the setting on: a loopback receiver is accepted (that is what the flag is for)
    ok = run_batch([["webhooks", "add", f"http://127.0.0.1:{listener.port}/h"]],
                   kl_env.with_(KEYLEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true"), kl_env.path)[0]
    assert ok["code"] == 0, ok


def test_delivery_refuses_stored_non_public_urls_without_connecting(engine, clock, listener):  # noqa: F811
    """URLs stored before the guard (or by a library caller, or via DNS that changed) are refused at send."""
    cipher = Cipher.from_config(generate_key())
    hooks = WebhookService(engine, cipher, clock)  # no creation check: what an old row looks like
    for template in LOOPBACK + PRIVATE:
        hooks.add(template.format(port=listener.port))
    emit(engine, clock, n=2)
    transport = NoConnectTransport()
    report = Deliverer(engine, cipher, clock, allow_private=False, transport=transport).deliver_due()
    assert report.attempted == 2 * len(LOOPBACK + PRIVATE) and report.delivered == 0
    attempts = hooks.attempts()
    assert len(attempts) == report.attempted
    assert all(a["error"].startswith("refused: ") and a["status_code"] is None for a in attempts), attempts
    assert transport.requests == [] and listener.connections == 0
