"""``dgemu serve``: run the emulator with uvicorn."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import uuid

from . import __version__
from .common import Emulator, Settings
from .prices import PriceTable
from .store import DEFAULT_OWNER_KEY, DEFAULT_PROJECT_ID, Persister, Store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgemu", description="Deepgram API emulator")
    parser.add_argument("--version", action="version", version=f"dgemu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the emulator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--project-id", default=DEFAULT_PROJECT_ID)
    s.add_argument("--owner-key", default=DEFAULT_OWNER_KEY)
    s.add_argument("--state", default=None, help="JSON file to load at start and save to (atomically)")
    s.add_argument("--price-file", default=None, help="price table JSON (same format as data/prices.json)")
    s.add_argument("--seed", type=int, default=None, help="seed ids and fault injection")
    s.add_argument("--ws-idle-timeout", type=float, default=10.0, help="seconds without audio/KeepAlive")
    s.add_argument(
        "--ws-results-interval", type=float, default=1.0, help="seconds of audio per Results message"
    )
    s.add_argument("--access-log", action="store_true", help="enable uvicorn's access log")
    s.add_argument("--log-level", default="warning")
    return parser


def make_emulator(args: argparse.Namespace) -> tuple[Emulator, Persister | None]:
    try:
        uuid.UUID(args.project_id)
    except ValueError:
        raise SystemExit(f"dgemu: --project-id must be a UUID, got {args.project_id!r}") from None
    if not args.owner_key or any(c.isspace() for c in args.owner_key):
        raise SystemExit("dgemu: --owner-key must be a non-empty string without whitespace")
    try:
        prices = PriceTable.load(args.price_file)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as exc:
        raise SystemExit(f"dgemu: cannot load the price table {args.price_file}: {exc!r}") from None
    store = Store(args.project_id.lower(), args.owner_key, prices, seed=args.seed)
    persister = None
    if args.state:
        persister = Persister(store, args.state)
        try:
            loaded = persister.load_if_present()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"dgemu: cannot load state from {args.state}: {exc!r}") from None
        if loaded:
            # the command line wins for the initial project identity (used by reset)
            store.initial_project_id = args.project_id.lower()
            store.initial_owner_key = args.owner_key
            if store.initial_project_id not in store.projects:
                store.ensure_initial_project()
    settings = Settings(ws_idle_timeout=args.ws_idle_timeout, ws_results_interval=args.ws_results_interval)
    return Emulator(store, settings), persister


class _DenialNoise(logging.Filter):
    """uvicorn 0.54 logs a spurious error after a WebSocket handshake is denied with an HTTP response."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_DenialNoise())

    from .app import build_app

    emu, persister = make_emulator(args)
    app = build_app(emu, persister)
    # request records are acyclic; fewer young-generation collections keep bulk injection fast
    gc.set_threshold(200_000, 50, 100)
    gc.freeze()
    print(f"dgemu {__version__} listening on http://{args.host}:{args.port}", flush=True)
    print(f"project_id: {emu.store.initial_project_id}", flush=True)
    print(f"owner_key: {emu.store.initial_owner_key}", flush=True)
    if args.state:
        print(f"state: {args.state}", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        log_level=args.log_level,
        ws_ping_interval=None,
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        serve(args)
    else:  # pragma: no cover
        sys.exit(2)
