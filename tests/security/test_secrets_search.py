"""Secrets never leak, on SQLite and PostgreSQL. A realistic flow — a connection with its key stored,
customers, keys created and rotated, browser tokens minted, a bring-your-own connection, a webhook endpoint,
admin and portal tokens, API calls (lists, shows, errors) and CLI commands with KEYLEDGER_LOG_LEVEL=debug —
then every secret value, raw and in base64 and hex, is searched for in: the CLI's stderr and non-creating
stdout, the app's logs, every API response body except the one "shown once" creation response, and the
database (SQLite: the file and its WAL; PostgreSQL: ``pg_dump``, else every column of every table)."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.engine import make_url

from keyledger.customers.at_rest import ENCRYPTED_COLUMNS, decrypt_everything
from keyledger.db.metadata import metadata
from tests.security.cli_batch import run_batch
from tests.security.test_bola_bopla import routes, url_for

REFUSED_KEY = "refusedkey" + "0" * 30  # a key sent with a request that fails: not logged either
REFUSED_BYO_KEY = "refusedbyo" + "1" * 30


def forms(secret: str) -> set[bytes]:
    """The secret as bytes, and its base64 (standard and URL-safe, padded or not) and hex spellings."""
    raw = secret.encode()
    out = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        out |= {enc, enc.rstrip(b"=")}
    return out


def found_in(blob: bytes, secrets: dict[str, str]) -> list[str]:
    return [label for label, s in secrets.items() if any(f in blob for f in forms(s))]


def database_bytes(engine) -> bytes:
    url = make_url(engine.url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database)
        return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    if shutil.which("pg_dump"):
        dump = subprocess.run(["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                               "-U", url.username or "postgres", "--data-only", url.database],
                              capture_output=True, check=True, timeout=120)
        return dump.stdout
    parts = []
    with engine.connect() as db:
        for t in metadata.sorted_tables:
            for row in db.execute(select(t)):
                parts += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(parts)


def _debug_logs_to_stderr():
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    return saved


def test_no_secret_outside_its_one_shown_once_response(api, kl_env, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    saved = _debug_logs_to_stderr()
    rt = api.runtime
    dg = api.dgemu
    shown_once: list[bytes] = []
    try:
        with dg.client() as c:
            own = c.post("/_emulator/projects", json={"name": "bravo's own Deepgram"}).json()
        alpha = api.customer("alpha")
        bravo = api.customer("bravo")
        portal = api.portal_token(alpha["id"])
        shown_once.append(api.responses[-1])
        with api.client() as c:
            created = c.post(f"/customers/{alpha['id']}/keys", headers={"Idempotency-Key": "k-1"})
            rotated = c.post(f"/customers/{alpha['id']}/keys/{created.json()['id']}/rotate")
            grant = c.post(f"/customers/{alpha['id']}/tokens", json={"ttl_seconds": 60})
            hook = c.post("/webhook-endpoints", json={"url": "https://hooks.example.com/kl"})
            for r in (created, rotated, grant, hook):
                assert r.status_code == 201, r.text
                shown_once.append(r.content)
            # errors that name a secret-bearing request
            c.post("/webhook-endpoints", json={"url": "http://127.0.0.1/x"})
            c.post("/connections", json={"name": "dup", "project_id": dg.project_id, "api_key": REFUSED_KEY,
                                         "base_url": dg.base_url})
            c.put(f"/customers/{bravo['id']}/byo-connection",
                  json={"project_id": own["project_id"], "api_key": REFUSED_BYO_KEY})
        with api.client(portal) as p:
            r = p.put(f"/customers/{alpha['id']}/byo-connection",
                      json={"project_id": own["project_id"], "api_key": own["owner_key"]})
            assert r.status_code == 200, r.text
        # CLI, logging at debug; creating commands print their secret once on stdout
        env = kl_env.with_(KEYLEDGER_SECRET_KEY=rt.settings.secret_key.get_secret_value(),
                           KEYLEDGER_DATABASE_URL=rt.settings.database_url, KEYLEDGER_LOG_LEVEL="debug",
                           DEEPGRAM_API_KEY=dg.owner_key)
        creating = [["keys", "create", "bravo", "--json"], ["admin-tokens", "create", "ops", "--json"],
                    ["webhooks", "add", "https://hooks.example.com/two", "--json"],
                    ["tokens", "grant", "alpha", "--json"]]
        reading = [["keys", "list", "--json"], ["customers", "list", "--json"],
                   ["connections", "list", "--json"], ["webhooks", "list", "--json"],
                   ["admin-tokens", "list", "--json"], ["sync"],
                   ["keys", "create", "nobody"],
                   ["connections", "add", "x", "--project-id", "p-1", "--base-url", dg.base_url]]
        cli = run_batch(creating + reading, env, kl_env.path)
        for argv, r in zip(creating, cli, strict=False):
            assert r["code"] == 0, (argv, r)
        cli_secrets = {f"cli {argv[0]} secret": next(v for k, v in json.loads(r["stdout"]).items()
                                                     if k in ("secret", "token", "access_token"))
                       for argv, r in zip(creating, cli, strict=False)}
        # every readable API route, as admin and as the portal token (the credentials endpoint hands out
        # the key by design, audited: it is the one read that may)
        ids = {"customer_id": alpha["id"], "key_id": rotated.json()["id"], "invoice_id": "inv_none",
               "token_id": "pt_none", "run_id": "run_none", "event_id": "evt_none", "plan_id": "none",
               "credit_note_id": "crn_none",
               "endpoint_id": hook.json()["id"], "connection_id": api.connection_id}
        for token in (None, portal):
            with api.client(token) as c:
                for method, path in routes(api):
                    if method == "GET" and path.startswith("/api/") and not path.endswith("/credentials"):
                        c.get(url_for(path, ids).removeprefix("/api/v1"))
        # the secrets: every stored one (decrypted), every token and the inputs that were secrets
        with rt.engine.connect() as db:
            stored = decrypt_everything(db, rt.cipher)
        secrets = {f"{name} {pk}": v.decode() for (name, pk), v in stored.items()
                   if name not in ("idempotency_keys", "secret_key_check")}
        secrets |= {"admin token": api.admin_token, "portal token": portal,
                    "grant token": grant.json()["access_token"], "BYO key given": own["owner_key"],
                    "refused connection key": REFUSED_KEY, "refused BYO key": REFUSED_BYO_KEY,
                    "secret key": rt.settings.secret_key.get_secret_value(), **cli_secrets}
        assert len(secrets) >= 12, sorted(secrets)
        assert {c.name for c in ENCRYPTED_COLUMNS} - {n.split()[0] for n in secrets} == {
            "idempotency_keys", "secret_key_check"}
        # searched
        leaks: dict[str, list[str]] = {}
        for i, body in enumerate(api.responses):
            if body not in shown_once and (hit := found_in(body, secrets)):
                leaks[f"response #{i} {body[:80]!r}"] = hit
        for argv, r in zip(creating + reading, cli, strict=True):
            hit = found_in(r["stderr"].encode(), secrets)
            if argv not in creating:
                hit += found_in(r["stdout"].encode(), secrets)
            else:  # a creating command shows its own secret, and only it
                own_secret = cli_secrets[f"cli {argv[0]} secret"]
                hit += [h for h in found_in(r["stdout"].encode(), secrets) if secrets[h] != own_secret]
            if hit:
                leaks[f"cli {' '.join(argv)}"] = hit
        logs = capfd.readouterr()
        app_logs = (logs.err + logs.out + "\n".join(m.getMessage() for m in caplog.records)).encode()
        if hit := found_in(app_logs, secrets):
            leaks["app logs"] = hit
        if hit := found_in(database_bytes(rt.engine), secrets):
            leaks["database"] = hit
        assert leaks == {}, leaks
        assert len(app_logs) > 0 and any(r["stderr"] for r in cli)  # the logs searched were not empty
        print(f"secrets: {len(secrets)} secrets x {len(api.responses)} responses, {len(cli)} CLI runs, "
              f"{len(app_logs)} bytes of app logs and the database: 0 leaks")
    finally:
        structlog.configure(**saved)
        os.environ.pop("KEYLEDGER_LOG_LEVEL", None)
