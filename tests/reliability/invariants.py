"""What must hold after any seeded run, crashes and storms included. ``check`` counts each kind of breach
(``Breaches``) so the suite can print its figures, and the test asserts every count is 0.

- ledger == provider: the ledger's request ids are dgemu's (none missing, none twice), each record's cost is
  exact, rollups equal a recomputation, per-key totals equal dgemu's billing breakdown;
- finalized invoices never change (content hash), numbers are gapless with one ``invoice.finalized``
  event each, and every usage record of the invoiced customer in the
  period is claimed by exactly one live invoice (late usage lands on a new draft);
- webhooks: every outbox event reached the receiver under its own webhook-id, no delivery under an id that
  is not an event's, the same id always carries the same body;
- keys: one live Deepgram key per active customer, none for a suspended one, no key at dgemu that the ledger
  does not know as live (no orphans);
- the revoke budget: acme over its limit is suspended exactly once (one customer.suspended, one key.revoked
  per key it revoked), its budget state ``revoked``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from decimal import Decimal

from sqlalchemy import select

from keyledger.core.money import loads_exact
from keyledger.db.tables_budgets import budget_periods
from keyledger.db.tables_customers import customers, keys
from keyledger.db.tables_invoices import invoices
from keyledger.db.tables_notifications import webhook_events
from keyledger.invoices import store as invoice_store
from tests.scenario.test_sync_crash import billing_by_key
from tests.usage_support import dgemu_requests, ledger_rows, recomputed_rollups, rollups

from .engine import BUDGET_LIMIT, Scenario, invoice_hash


@dataclass
class Breaches:
    records_lost: int = 0
    records_duplicated: int = 0
    amounts_wrong: int = 0  # a record's cost, a rollup cell or a key's total differs from dgemu
    invoices_changed: int = 0
    invoices_numbering_wrong: int = 0  # numbers not gapless, or not one invoice.finalized event each
    usage_unclaimed: int = 0
    usage_claimed_twice: int = 0
    events_lost: int = 0
    events_new_id: int = 0  # a delivery whose webhook-id is no event's (sent again under a new id)
    events_body_changed: int = 0
    events_resent_unexplained: int = 0  # sent twice (same id) more often than deliveries were killed
    keys_wrong: int = 0  # customers without exactly the live keys they should have
    keys_orphaned: int = 0
    revocations_wrong: int = 0

    def items(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def any(self) -> bool:
        return any(self.items().values())


def check(s: Scenario) -> tuple[Breaches, list[str]]:
    b, notes = Breaches(), []
    _ledger(s, b, notes)
    _invoices(s, b, notes)
    _webhooks(s, b, notes)
    _keys(s, b, notes)
    _budget(s, b, notes)
    return b, notes


def _ledger(s: Scenario, b: Breaches, notes: list[str]) -> None:
    theirs = {r["request_id"]: r for r in dgemu_requests(s.dgemu)}
    rows = ledger_rows(s.engine)
    ours = Counter(r["request_id"] for r in rows)
    b.records_duplicated = sum(n - 1 for n in ours.values())
    b.records_lost = len(set(theirs) - set(ours))
    extra = set(ours) - set(theirs)
    b.records_duplicated += len(extra)  # a record dgemu does not have: counted with the duplicates
    if s.injected != len(theirs):
        notes.append(f"dgemu holds {len(theirs)} records, {s.injected} injected")
        b.records_lost += abs(s.injected - len(theirs))
    for r in rows:
        usd = theirs.get(r["request_id"], {}).get("response", {}).get("details", {}).get("usd")
        if usd is not None and Decimal(str(usd)) != r["cost_usd"]:
            b.amounts_wrong += 1
    if rollups(s.engine) != recomputed_rollups(s.engine):
        b.amounts_wrong += 1
        notes.append("rollups differ from a recomputation")
    if rows:
        ledger: dict[str, Decimal] = defaultdict(Decimal)
        for r in rows:
            ledger[r["api_key_id"]] += r["cost_usd"]
        days = sorted(r["day"] for r in rows)
        billing = billing_by_key(s.dgemu, days[0].isoformat(), days[-1].isoformat())
        wrong = {k for k in set(ledger) | set(billing) if ledger.get(k) != billing.get(k)}
        b.amounts_wrong += len(wrong)
        if wrong:
            notes.append(f"per-key totals differ from the billing breakdown: {sorted(wrong)}")


def _invoices(s: Scenario, b: Breaches, notes: list[str]) -> None:
    for inv_id, digest in s.finalized.items():
        if invoice_hash(s.engine, s.rt.clock, inv_id) != digest:
            b.invoices_changed += 1
            notes.append(f"finalized invoice {inv_id} changed")
    with s.engine.connect() as db:
        beta = db.execute(select(customers.c.id).where(customers.c.external_id == "beta")).scalar_one()
        live = set(
            db.execute(
                select(invoices.c.id).where(invoices.c.customer_id == beta, invoices.c.status != "void")
            ).scalars()
        )
        claims = Counter(rid for rid, inv, _ in invoice_store.claimed_records(db) if inv in live)
        numbers = sorted(
            db.execute(select(invoices.c.number).where(invoices.c.number.is_not(None))).scalars().all()
        )
        finalized_events = db.execute(
            select(webhook_events.c.id).where(webhook_events.c.type == "invoice.finalized")
        ).all()
    sequence = [int(n.rsplit("-", 1)[1]) for n in numbers]
    if sequence != list(range(1, len(sequence) + 1)) or len(finalized_events) != len(numbers):
        b.invoices_numbering_wrong += 1
        notes.append(f"invoice numbers {numbers}, {len(finalized_events)} invoice.finalized events")
    records = [r for r in ledger_rows(s.engine) if r["customer_id"] == beta]
    ids = {r["id"] for r in records}
    b.usage_claimed_twice = sum(n - 1 for n in claims.values())
    b.usage_unclaimed = len(ids - set(claims))


def _webhooks(s: Scenario, b: Breaches, notes: list[str]) -> None:
    with s.engine.connect() as db:
        events = {r.id: r.type for r in db.execute(select(webhook_events.c.id, webhook_events.c.type))}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for headers, body in s.receiver.requests:
        bodies[headers["webhook-id"]].add(body)
    # the endpoint is added before the first key: it is subscribed to every event of the run
    b.events_lost = len(set(events) - set(bodies))
    b.events_new_id = len(set(bodies) - set(events))
    b.events_body_changed = sum(1 for v in bodies.values() if len(v) > 1)
    b.events_resent_unexplained = max(0, resent(s) - s.stats.resends_same_id)
    if b.events_lost:
        notes.append(f"events never delivered: {sorted(events[e] for e in set(events) - set(bodies))}")


def resent(s: Scenario) -> int:
    """Deliveries the receiver got again under an id it had already seen."""
    seen = Counter(headers["webhook-id"] for headers, _ in s.receiver.requests)
    return sum(n - 1 for n in seen.values())


def _dgemu_key_ids(s: Scenario) -> set[str]:
    with s.dgemu.client() as c:
        r = c.get(f"/v1/projects/{s.dgemu.project_id}/keys")
        r.raise_for_status()
    return {k["api_key"]["api_key_id"] for k in loads_exact(r.content)["api_keys"]}


def _keys(s: Scenario, b: Breaches, notes: list[str]) -> None:
    at_dgemu = _dgemu_key_ids(s)
    with s.engine.connect() as db:
        rows = db.execute(
            select(customers.c.external_id, customers.c.status, keys.c.api_key_id, keys.c.status).join(
                keys, keys.c.customer_id == customers.c.id
            )
        ).all()
    live: dict[str, list[str]] = defaultdict(list)
    status: dict[str, str] = {}
    for ext, cstatus, api_key_id, kstatus in rows:
        status[ext] = cstatus
        if kstatus == "active":
            live[ext].append(api_key_id)
    for ext, cstatus in status.items():
        want = 1 if cstatus == "active" else 0
        if len(live[ext]) != want or any(k not in at_dgemu for k in live[ext]):
            b.keys_wrong += 1
            notes.append(f"{ext} ({cstatus}) has live keys {live[ext]}")
    known = {k for ks in live.values() for k in ks}
    owner = {k for k in at_dgemu if k not in {r[2] for r in rows}}
    orphans = at_dgemu - known - owner  # keys the ledger knows as revoked but dgemu still has
    b.keys_orphaned = len(orphans) + max(0, len(owner) - 1)  # only the owner key is ours to ignore
    if b.keys_orphaned:
        notes.append(f"keys at dgemu the ledger does not hold live: {len(orphans)} + {len(owner) - 1}")


def _budget(s: Scenario, b: Breaches, notes: list[str]) -> None:
    with s.engine.connect() as db:
        acme = db.execute(
            select(customers.c.id, customers.c.status).where(customers.c.external_id == "acme")
        ).one()
        state = db.execute(
            select(budget_periods.c.state).where(budget_periods.c.customer_id == acme.id)
        ).scalar_one_or_none()
        revoked_keys = db.execute(
            select(keys.c.id).where(keys.c.customer_id == acme.id, keys.c.status == "revoked")
        ).scalars().all()
        payloads = [
            (t, json.loads(p) if isinstance(p, str) else p)
            for t, p in db.execute(select(webhook_events.c.type, webhook_events.c.payload))
        ]
    spent = sum((r["cost_usd"] for r in ledger_rows(s.engine) if r["customer_id"] == acme.id), Decimal(0))
    suspended = Counter(t for t, p in payloads if t == "customer.suspended")["customer.suspended"]
    revoked_events = Counter(
        _key_id(p) for t, p in payloads if t == "key.revoked" and _key_id(p) in set(revoked_keys)
    )
    ok = True
    if spent > BUDGET_LIMIT:
        ok = acme.status == "suspended" and state == "revoked" and suspended == 1
        ok = ok and all(n == 1 for n in revoked_events.values()) and set(revoked_events) == set(revoked_keys)
    else:
        ok = acme.status == "active" and suspended == 0
    if not ok:
        b.revocations_wrong += 1
        notes.append(
            f"acme spent {spent} (limit {BUDGET_LIMIT}): status {acme.status}, budget {state}, "
            f"customer.suspended x{suspended}, key.revoked {dict(revoked_events)} for {revoked_keys}"
        )


def _key_id(payload: dict) -> str | None:
    return payload.get("key_id")
