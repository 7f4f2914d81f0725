"""Webhook delivery to real local HTTP receivers (threads), on SQLite and PostgreSQL, with a driven clock:
a receiver down for days gets every event, signatures verify with an independent Standard Webhooks
implementation (the ``standardwebhooks`` package), webhook-id is stable across retries, 410 disables,
redirects are not followed, private addresses are refused unless allowed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from keyledger.core.clock import FrozenClock
from keyledger.core.crypto import Cipher, generate_key
from keyledger.db.outbox import enqueue
from keyledger.db.tables_notifications import webhook_deliveries, webhook_endpoints
from keyledger.notifications.service import BACKOFF, MAX_ATTEMPTS, Deliverer, WebhookService


class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread; ``respond(n)`` gives the status of the n-th request."""

    def __init__(self, respond: Callable[[int], int] = lambda n: 200, headers: dict | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.respond = respond
        self.extra_headers = headers or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.respond(len(outer.requests))
                self.send_response(status)
                for k, v in outer.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*args, **kwargs) -> Receiver:
        r = Receiver(*args, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def clock():
    return FrozenClock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def cipher():
    return Cipher.from_config(generate_key())


def emit(engine, clock, n: int = 1, type_: str = "key.created") -> list[str]:
    with engine.begin() as db:
        return [enqueue(db, type_, {"n": i, "key_id": f"key_{i}"}, clock.now()) for i in range(n)]


def deliverer(engine, cipher, clock, **kw) -> Deliverer:
    return Deliverer(engine, cipher, clock, allow_private=kw.pop("allow_private", True), **kw)


def drive(engine, cipher, clock, *, until: timedelta, step: timedelta = timedelta(minutes=1)) -> None:
    """Run the sender as a worker would, moving the clock forward in steps."""
    end = clock.now() + until
    d = deliverer(engine, cipher, clock)
    while clock.now() < end:
        d.deliver_due()
        clock.advance(step)
    d.deliver_due()


def test_receiver_down_for_days_gets_every_event_with_stable_ids(engine, clock, cipher, receiver):
    up_after = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)  # about two and a half days of outage
    r = receiver(respond=lambda n: 200 if clock.now() >= up_after else 503)
    ep = WebhookService(engine, cipher, clock).add(r.url)
    ids = emit(engine, clock, 3)
    drive(engine, cipher, clock, until=timedelta(days=3), step=timedelta(minutes=20))
    by_id: dict[str, set[bytes]] = {}
    for h, body in r.requests:
        by_id.setdefault(h["webhook-id"], set()).add(body)
    assert set(by_id) == set(ids)  # nothing under another id
    assert all(len(bodies) == 1 for bodies in by_id.values())  # the same bytes on every attempt
    wh = Webhook(ep["secret"])
    for h, body in r.requests:
        wh.verify(body, h)  # the independent implementation accepts every attempt
    with engine.connect() as db:
        states = db.execute(select(webhook_deliveries.c.state, webhook_deliveries.c.attempts)).all()
    assert [s for s, _ in states] == ["delivered"] * 3
    assert all(a > 5 for _, a in states)
    log = WebhookService(engine, cipher, clock).attempts(ids[0])
    assert [a["attempt"] for a in log] == list(range(1, len(log) + 1))
    assert log[-1]["status_code"] == 200 and all(a["status_code"] == 503 for a in log[:-1])


def test_backoff_spans_about_three_days_then_fails(engine, clock, cipher, receiver):
    r = receiver(respond=lambda n: 500)
    WebhookService(engine, cipher, clock).add(r.url)
    emit(engine, clock, 1)
    total = sum(BACKOFF, timedelta())
    assert timedelta(days=2, hours=20) < total < timedelta(days=3, hours=6)
    drive(engine, cipher, clock, until=total + timedelta(hours=1), step=timedelta(minutes=15))
    assert len(r.requests) == MAX_ATTEMPTS
    with engine.connect() as db:
        assert db.execute(select(webhook_deliveries.c.state)).scalar_one() == "failed"


def test_tampered_wrong_secret_and_stale_are_rejected_by_a_receiver(engine, clock, cipher, receiver):
    r = receiver()
    ep = WebhookService(engine, cipher, clock).add(r.url)
    emit(engine, clock, 1)
    deliverer(engine, cipher, clock).deliver_due()
    ((h, body),) = r.requests
    assert h["webhook-signature"].startswith("v1,") and ep["secret"].startswith("whsec_")
    Webhook(ep["secret"]).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        Webhook(ep["secret"]).verify(body.replace(b'"n":0', b'"n":1'), h)
    other = WebhookService(engine, cipher, clock).add(r.url)["secret"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, h)
    stale = dict(h, **{"webhook-timestamp": str(int(h["webhook-timestamp"]) - 3600)})
    with pytest.raises(WebhookVerificationError):
        Webhook(ep["secret"]).verify(body, stale)


def test_event_filter_410_disables_and_redirects_are_not_followed(engine, clock, cipher, receiver):
    gone = receiver(respond=lambda n: 410)
    target = receiver()
    redirect = receiver(respond=lambda n: 302, headers={"location": target.url})
    only_invoices = receiver()
    svc = WebhookService(engine, cipher, clock)
    g = svc.add(gone.url)
    svc.add(redirect.url)
    svc.add(only_invoices.url, events="invoice.finalized")
    emit(engine, clock, 2)
    d = deliverer(engine, cipher, clock)
    d.deliver_due()
    assert len(gone.requests) == 1  # the second delivery to it was cancelled when it answered 410
    assert only_invoices.requests == []
    assert len(redirect.requests) == 2 and target.requests == []
    with engine.connect() as db:
        status = db.execute(
            select(webhook_endpoints.c.status).where(webhook_endpoints.c.id == g["id"])
        ).scalar_one()
    assert status == "disabled"
    emit(engine, clock, 1, "invoice.finalized")
    d.deliver_due()
    assert len(only_invoices.requests) == 1 and len(gone.requests) == 1


def test_private_addresses_are_refused_unless_allowed(engine, clock, cipher, receiver):
    r = receiver()
    WebhookService(engine, cipher, clock).add(r.url)
    ids = emit(engine, clock, 1)
    rep = deliverer(engine, cipher, clock, allow_private=False).deliver_due()
    assert rep.retrying == 1 and r.requests == []
    log = WebhookService(engine, cipher, clock).attempts(ids[0])
    assert "non-public address" in log[0]["error"] and log[0]["status_code"] is None
    clock.advance(BACKOFF[0])
    deliverer(engine, cipher, clock, allow_private=True).deliver_due()
    assert len(r.requests) == 1


def test_replay_resends_under_the_same_id(engine, clock, cipher, receiver):
    r = receiver()
    svc = WebhookService(engine, cipher, clock)
    svc.add(r.url)
    (eid,) = emit(engine, clock, 1)
    d = deliverer(engine, cipher, clock)
    d.deliver_due()
    assert svc.replay(eid) == 1
    d.deliver_due()
    assert [h["webhook-id"] for h, _ in r.requests] == [eid, eid]
    assert r.requests[0][1] == r.requests[1][1]


def test_secret_is_encrypted_and_never_listed(engine, clock, cipher, receiver):
    svc = WebhookService(engine, cipher, clock)
    ep = svc.add("https://hooks.example.com/kl", events="key.created,key.revoked")
    with engine.connect() as db:
        blob = db.execute(select(webhook_endpoints.c.secret_ciphertext)).scalar_one()
    assert ep["secret"].encode() not in blob
    listed = svc.list()
    assert ep["secret"] not in repr(listed) and listed[0]["events"] == ["key.created", "key.revoked"]


def test_concurrent_senders_never_send_twice(engine, clock, cipher, receiver):
    r = receiver()
    WebhookService(engine, cipher, clock).add(r.url)
    emit(engine, clock, 40)
    senders = [deliverer(engine, cipher, clock) for _ in range(4)]
    threads = [threading.Thread(target=s.deliver_due) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [h["webhook-id"] for h, _ in r.requests]
    assert len(ids) == 40 and len(set(ids)) == 40


def test_an_undecryptable_secret_is_logged_and_retried_not_fatal(engine, clock, cipher, receiver):
    r = receiver()
    WebhookService(engine, cipher, clock).add(r.url)
    (eid,) = emit(engine, clock, 1)
    wrong = Cipher.from_config(generate_key())
    rep = deliverer(engine, wrong, clock).deliver_due()
    assert rep.retrying == 1 and r.requests == []
    [att] = WebhookService(engine, cipher, clock).attempts(eid)
    assert "not configured" in att["error"] and "whsec_" not in att["error"]
    clock.advance(BACKOFF[0])
    deliverer(engine, cipher, clock).deliver_due()
    assert len(r.requests) == 1
