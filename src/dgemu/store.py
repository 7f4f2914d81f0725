"""In-memory state: projects, keys, grant tokens, request records (sorted, indexed), faults; persistence."""

from __future__ import annotations

import json
import os
import random
import secrets
import tempfile
import threading
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any

from . import jsonout, timeutil
from .prices import PriceTable

NS = uuid.UUID("5d1c0f4e-6b7a-4c1e-9a52-d6e0d6e0d6e0")
DEFAULT_PROJECT_ID = "00000000-0000-4000-8000-00000000d6e0"
DEFAULT_OWNER_KEY = "dgemu0wner0000000000000000000000000d6e0"
DEFAULT_PROJECT_NAME = "dgemu project"
INITIAL_BALANCE = Decimal("200.00")
STATE_VERSION = 1
INDEXED = ("accessor", "endpoint", "method", "status", "deployment")
_sort_key = attrgetter("created_us", "request_id")
#: The longest sorted tail merged at once when older records are added (see RecordLog._append).
EAGER_MERGE_MAX = 50_000
_created = attrgetter("created_us")
_encode_str = json.encoder.encode_basestring  # as json.dumps(ensure_ascii=False) writes a string
_num = jsonout.decimal_text


def _str_list(items: tuple[str, ...]) -> str:
    return "[" + ",".join(map(_encode_str, items)) + "]" if items else "[]"


def derived_id(*parts: str) -> str:
    return str(uuid.uuid5(NS, ":".join(parts)))


@dataclass(slots=True)
class Key:
    api_key_id: str
    secret: str
    project_id: str
    member_id: str
    comment: str
    scopes: tuple[str, ...]
    tags: tuple[str, ...]
    expiration_us: int | None
    created_us: int
    created_by: str | None = None
    deleted: bool = False

    def expired(self, now: int) -> bool:
        return self.expiration_us is not None and self.expiration_us <= now

    def usable(self, now: int) -> bool:
        return not self.deleted and not self.expired(now)


@dataclass(slots=True)
class Record:
    request_id: str
    created_us: int
    api_key_id: str
    path: str
    code: int
    deployment: str
    endpoint: str
    method: str
    model: str
    line_item: str | None
    duration: Decimal
    total_audio: Decimal
    channels: int
    streams: int
    characters: int
    tokens_in: int
    tokens_out: int
    usd: Decimal
    tags: tuple[str, ...]
    features: tuple[str, ...]
    config: dict | None
    completed_us: int
    visible_us: int
    message: str | None = None
    # the record's JSON as the request log writes it (``render`` + ``jsonout.dumps``), set once stored
    fragment: bytes | None = None

    # ---- index values
    @property
    def accessor(self) -> str:
        return self.api_key_id

    @property
    def status(self) -> str:
        return "succeeded" if self.code < 300 else "failed"

    @property
    def billed(self) -> bool:
        return self.code < 300 and self.line_item is not None

    def to_row(self) -> list:
        return [
            self.request_id,
            self.created_us,
            self.api_key_id,
            self.path,
            self.code,
            self.deployment,
            self.endpoint,
            self.method,
            self.model,
            self.line_item,
            str(self.duration),
            str(self.total_audio),
            self.channels,
            self.streams,
            self.characters,
            self.tokens_in,
            self.tokens_out,
            str(self.usd),
            list(self.tags),
            list(self.features),
            self.config,
            self.completed_us,
            self.visible_us,
            self.message,
        ]

    @classmethod
    def from_row(cls, row: list) -> Record:
        r = list(row)
        for i in (10, 11, 17):
            r[i] = Decimal(r[i])
        r[18] = tuple(r[18])
        r[19] = tuple(r[19])
        return cls(*r)

    def json_fragment(self, project_id: str) -> bytes:
        """``jsonout.dumps(self.render(project_id))`` as UTF-8, built directly (a page joins these)."""
        enc = _encode_str
        head = (
            f'{{"request_id":{enc(self.request_id)},"project_uuid":{enc(project_id)},'
            f'"created":"{timeutil.iso(self.created_us)}","path":{enc(self.path)},'
            f'"api_key_id":{enc(self.api_key_id)},"accessor":{enc(self.api_key_id)},'
            f'"response":{{"code":{self.code},"completed":"{timeutil.iso(self.completed_us)}"'
        )
        if self.message is not None:
            body = f',"message":{enc(self.message)}}}'
        else:
            model = enc(self.model)
            config = f'{{"model":{model}}}' if self.config is None else jsonout.dumps(self.config)
            line_item = "null" if self.line_item is None else enc(self.line_item)
            extra = ""
            if self.endpoint == "speak":
                extra = f',"characters":{self.characters}'
            elif self.endpoint == "read":
                extra = f',"tokens_in":{self.tokens_in},"tokens_out":{self.tokens_out}'
            body = (
                f',"details":{{"usd":{_num(self.usd)},"duration":{_num(self.duration)},'
                f'"total_audio":{_num(self.total_audio)},"channels":{self.channels},'
                f'"streams":{self.streams},"models":[{model}],"method":{enc(self.method)},'
                f'"tags":{_str_list(self.tags)},"features":{_str_list(self.features)},'
                f'"config":{config},"line_item":{line_item}{extra}}}}}'
            )
        tail = f',"code":{self.code},"deployment":{enc(self.deployment)}}}'
        return (head + body + tail).encode("utf-8")

    def render(self, project_id: str) -> dict:
        response: dict[str, Any] = {"code": self.code, "completed": timeutil.iso(self.completed_us)}
        if self.message is not None:
            response["message"] = self.message
        else:
            details: dict[str, Any] = {
                "usd": self.usd,
                "duration": self.duration,
                "total_audio": self.total_audio,
                "channels": self.channels,
                "streams": self.streams,
                "models": [self.model],
                "method": self.method,
                "tags": list(self.tags),
                "features": list(self.features),
                "config": self.config if self.config is not None else {"model": self.model},
                "line_item": self.line_item,
            }
            if self.endpoint == "speak":
                details["characters"] = self.characters
            if self.endpoint == "read":
                details["tokens_in"] = self.tokens_in
                details["tokens_out"] = self.tokens_out
            response["details"] = details
        return {
            "request_id": self.request_id,
            "project_uuid": project_id,
            "created": timeutil.iso(self.created_us),
            "path": self.path,
            "api_key_id": self.api_key_id,
            "accessor": self.api_key_id,
            "response": response,
            "code": self.code,
            "deployment": self.deployment,
        }


class RecordLog:
    """Records of one project: one list sorted by (created, request_id) plus one list per indexed value."""

    def __init__(self) -> None:
        self.all: list[Record] = []
        self.index: dict[str, dict[str, list[Record]]] = {f: {} for f in INDEXED}
        self.by_id: dict[str, Record] = {}
        self._dirty: set[int] = set()
        self._lists: dict[int, list[Record]] = {}
        self.max_visible_us = 0
        self.spent = Decimal(0)
        # daily aggregates of succeeded, visible records (folded in lazily, at the first aggregate query)
        self.daily: dict[int, dict[tuple, list]] = {}
        self._days: list[int] = []
        self._to_fold: list[Record] = []

    def __len__(self) -> int:
        return len(self.all)

    def _append(self, lst: list[Record], items: list[Record]) -> None:
        """Add sorted ``items`` to ``lst``. When they are older than its end and the part of ``lst`` newer
        than them is short (new traffic is recent), that tail is merged at once, so the next read does not
        sort a million records; otherwise (a bulk load in random order) ``lst`` is sorted once, at the next
        read."""
        if lst and items and _sort_key(items[0]) < _sort_key(lst[-1]):
            if id(lst) not in self._dirty:
                at = bisect_right(lst, _sort_key(items[0]), key=_sort_key)
                if len(lst) - at <= EAGER_MERGE_MAX:
                    merged = sorted(lst[at:] + items, key=_sort_key)
                    del lst[at:]
                    lst.extend(merged)
                    return
            self._dirty.add(id(lst))
            self._lists[id(lst)] = lst
        lst.extend(items)

    def add(self, records: list[Record]) -> None:
        if not records:
            return
        records = sorted(records, key=_sort_key)
        self._append(self.all, records)
        by_id = self.by_id
        for r in records:
            by_id[r.request_id] = r
        by_acc: dict[str, list[Record]] = {}
        for r in records:
            lst = by_acc.get(r.api_key_id)
            if lst is None:
                by_acc[r.api_key_id] = [r]
            else:
                lst.append(r)
        for v, items in by_acc.items():
            self._append(self.index["accessor"].setdefault(v, []), items)
        for f in ("endpoint", "method", "deployment"):
            get = attrgetter(f)
            for v in set(map(get, records)):
                self._append(self.index[f].setdefault(v, []), [r for r in records if get(r) == v])
        ok = [r for r in records if r.code < 300]
        bad = [r for r in records if r.code >= 300]
        if ok:
            self._append(self.index["status"].setdefault("succeeded", []), ok)
        if bad:
            self._append(self.index["status"].setdefault("failed", []), bad)
        self.max_visible_us = max(self.max_visible_us, max(map(attrgetter("visible_us"), records)))
        self.spent += sum((r.usd for r in ok if r.line_item is not None), Decimal(0))
        self._to_fold.extend(ok)

    def _sorted(self, lst: list[Record]) -> list[Record]:
        if id(lst) in self._dirty:
            lst.sort(key=_sort_key)
            self._dirty.discard(id(lst))
            self._lists.pop(id(lst), None)
        return lst

    def candidates(self, filters: dict[str, str]) -> list[Record]:
        best = self.all
        for f in INDEXED:
            v = filters.get(f)
            if v is None:
                continue
            lst = self.index[f].get(v)
            if lst is None:
                return []
            if len(lst) <= len(best):
                best = lst
        return self._sorted(best)

    def window(
        self, filters: dict[str, str], start_us: int | None, end_us: int | None
    ) -> tuple[list[Record], int, int]:
        lst = self.candidates(filters)
        lo = 0 if start_us is None else bisect_left(lst, start_us, key=_created)
        hi = len(lst) if end_us is None else bisect_right(lst, end_us, key=_created)
        return lst, lo, hi

    def iter_range(
        self,
        filters: dict[str, str],
        start_us: int | None,
        end_us: int | None,
        now: int,
        extra: Callable[[Record], bool] | None = None,
    ) -> Iterator[Record]:
        """Matching visible records, oldest first."""
        lst, lo, hi = self.window(filters, start_us, end_us)
        checks = [(attrgetter(f), v) for f, v in filters.items() if f in INDEXED]
        all_visible = self.max_visible_us <= now
        for i in range(lo, hi):
            r = lst[i]
            if not all_visible and r.visible_us > now:
                continue
            if any(get(r) != v for get, v in checks):
                continue
            if extra is not None and not extra(r):
                continue
            yield r

    def scan(
        self, filters: dict[str, str], start_us: int | None, end_us: int | None, now: int
    ) -> list[Record]:
        """Matching visible records, oldest first, as a list (fast path for aggregates)."""
        lst, lo, hi = self.window(filters, start_us, end_us)
        sub = lst[lo:hi]
        if self.max_visible_us > now:
            sub = [r for r in sub if r.visible_us <= now]
        for f, v in filters.items():
            if f in INDEXED and lst is not self.index[f].get(v):
                get = attrgetter(f)
                sub = [r for r in sub if get(r) == v]
        return sub

    def page(
        self,
        filters: dict[str, str],
        start_us: int | None,
        end_us: int | None,
        page: int,
        limit: int,
        now: int,
    ) -> list[Record]:
        """Newest first; offset ``page * limit``."""
        lst, lo, hi = self.window(filters, start_us, end_us)
        checks = [(attrgetter(f), v) for f, v in filters.items() if f in INDEXED]
        all_visible = self.max_visible_us <= now
        skip = page * limit
        if all_visible and len(checks) <= 1:
            # the chosen list (the only filter's index list, or all) satisfies every filter: slice
            top = hi - skip
            bottom = max(lo, top - limit)
            return lst[bottom:top][::-1] if top > lo else []
        out: list[Record] = []
        for i in range(hi - 1, lo - 1, -1):
            r = lst[i]
            if not all_visible and r.visible_us > now:
                continue
            if any(get(r) != v for get, v in checks):
                continue
            if skip:
                skip -= 1
                continue
            out.append(r)
            if len(out) >= limit:
                break
        return out

    def fold(self, now: int) -> None:
        """Move succeeded records that are visible at ``now`` into the daily aggregates."""
        if not self._to_fold:
            return
        later: list[Record] = []
        daily = self.daily
        new_day = False
        for r in self._to_fold:
            if r.visible_us > now:
                later.append(r)
                continue
            d = r.created_us // timeutil.DAY_US
            bucket = daily.get(d)
            if bucket is None:
                bucket = daily[d] = {}
                new_day = True
            k = (r.api_key_id, r.deployment, r.line_item, r.tags, r.endpoint, r.method, r.model, r.features)
            a = bucket.get(k)
            if a is None:
                bucket[k] = [r.usd, 1, r.duration, r.total_audio, r.characters, r.tokens_in, r.tokens_out]
            else:
                a[0] += r.usd
                a[1] += 1
                a[2] += r.duration
                a[3] += r.total_audio
                a[4] += r.characters
                a[5] += r.tokens_in
                a[6] += r.tokens_out
        self._to_fold = later
        if new_day:
            self._days = sorted(daily)

    def aggregates(
        self, start_us: int | None, end_us: int | None, now: int
    ) -> Iterator[tuple[int, tuple, list]]:
        """``(day, key, [usd, requests, duration, total_audio, characters, tokens_in, tokens_out])`` for
        whole days in range; ``key`` = (api_key_id, deployment, line_item, tags, endpoint, method, model,
        features)."""
        self.fold(now)
        days = self._days
        lo = 0 if start_us is None else bisect_left(days, start_us // timeutil.DAY_US)
        hi = len(days) if end_us is None else bisect_right(days, end_us // timeutil.DAY_US)
        for d in days[lo:hi]:
            for k, a in self.daily[d].items():
                yield d, k, a

    def first_created(self, now: int) -> int | None:
        lst = self._sorted(self.all)
        for r in lst:
            if r.visible_us <= now:
                return r.created_us
        return None


def _render_fragments(project: Project, records: list[Record]) -> None:
    """Serialize each record once, when it is stored: a page of the request log then only joins bytes."""
    pid = project.project_id
    for r in records:
        r.fragment = r.json_fragment(pid)


@dataclass(slots=True)
class Project:
    project_id: str
    name: str
    owner_member_id: str
    owner_email: str
    created_us: int
    balance_id: str
    purchase_order_id: str
    initial_balance: Decimal = INITIAL_BALANCE
    mip_opt_out: bool = False
    deleted: bool = False
    log: RecordLog = field(default_factory=RecordLog)


@dataclass(slots=True)
class Token:
    token: str
    api_key_id: str
    project_id: str
    expires_us: int


@dataclass(slots=True)
class Faults:
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 1.0
    latency_ms: float = 0.0
    late_record_seconds: float = 0.0
    seed: int | None = None

    def to_dict(self) -> dict:
        return {
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after_seconds": self.retry_after_seconds,
            "latency_ms": self.latency_ms,
            "late_record_seconds": self.late_record_seconds,
            "seed": self.seed,
        }


class Store:
    def __init__(self, project_id: str, owner_key: str, prices: PriceTable, seed: int | None = None):
        self.lock = threading.RLock()
        self.initial_project_id = project_id
        self.initial_owner_key = owner_key
        self.prices = prices
        self.seed = seed
        self.version = 0
        self.interned: dict[tuple, tuple] = {}
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        with self.lock:
            self.projects: dict[str, Project] = {}
            self.keys: dict[str, Key] = {}
            self.keys_by_secret: dict[str, Key] = {}
            self.tokens: dict[str, Token] = {}
            self.faults = Faults()
            self.rng = random.Random(self.seed)
            self._create_project(
                self.initial_project_id, DEFAULT_PROJECT_NAME, self.initial_owner_key, created_us=0
            )
            self.touch()

    def ensure_initial_project(self) -> None:
        with self.lock:
            if (
                self.initial_project_id not in self.projects
                and self.initial_owner_key not in self.keys_by_secret
            ):
                self._create_project(self.initial_project_id, DEFAULT_PROJECT_NAME, self.initial_owner_key)
                self.touch()

    def touch(self) -> None:
        self.version += 1

    def new_uuid(self) -> str:
        if self.seed is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def new_uuids(self, n: int) -> list[str]:
        """``n`` random version-4 UUID strings, fast (bulk injection)."""
        if self.seed is not None:
            return [self.new_uuid() for _ in range(n)]
        raw = os.urandom(16 * n).hex()
        out = []
        for i in range(0, 32 * n, 32):
            h = raw[i : i + 32]
            out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}")
        return out

    def new_secret(self) -> str:
        if self.seed is None:
            return secrets.token_hex(20)
        return f"{self.rng.getrandbits(160):040x}"

    def _create_project(
        self, project_id: str, name: str, owner_key: str, created_us: int | None = None
    ) -> Project:
        now = timeutil.now_us() if not created_us else created_us
        p = Project(
            project_id=project_id,
            name=name,
            owner_member_id=derived_id(project_id, "owner-member"),
            owner_email=f"owner+{project_id[:8]}@dgemu.local",
            created_us=now,
            balance_id=derived_id(project_id, "balance"),
            purchase_order_id=derived_id(project_id, "purchase-order"),
        )
        self.projects[project_id] = p
        key = Key(
            api_key_id=derived_id(project_id, "owner-key"),
            secret=owner_key,
            project_id=project_id,
            member_id=p.owner_member_id,
            comment="dgemu owner key",
            scopes=("owner",),
            tags=(),
            expiration_us=None,
            created_us=now,
        )
        self.keys[key.api_key_id] = key
        self.keys_by_secret[owner_key] = key
        return p

    def create_project(self, name: str) -> tuple[Project, Key]:
        with self.lock:
            pid = self.new_uuid()
            secret = self.new_secret()
            p = self._create_project(pid, name, secret)
            self.touch()
            return p, self.keys_by_secret[secret]

    # ------------------------------------------------------------------ keys
    def add_key(self, key: Key) -> None:
        with self.lock:
            self.keys[key.api_key_id] = key
            self.keys_by_secret[key.secret] = key
            self.touch()

    def add_records(self, project: Project, records: list[Record]) -> None:
        _render_fragments(project, records)
        with self.lock:
            project.log.add(records)
            self.touch()

    # ------------------------------------------------------------------ persistence
    def snapshot(self) -> dict:
        with self.lock:
            return {
                "version": STATE_VERSION,
                "initial_project_id": self.initial_project_id,
                "initial_owner_key": self.initial_owner_key,
                "faults": self.faults.to_dict(),
                "projects": [
                    {
                        "project_id": p.project_id,
                        "name": p.name,
                        "owner_member_id": p.owner_member_id,
                        "owner_email": p.owner_email,
                        "created_us": p.created_us,
                        "balance_id": p.balance_id,
                        "purchase_order_id": p.purchase_order_id,
                        "initial_balance": str(p.initial_balance),
                        "mip_opt_out": p.mip_opt_out,
                        "deleted": p.deleted,
                        "records": [r.to_row() for r in p.log.all],
                    }
                    for p in self.projects.values()
                ],
                "keys": [
                    {
                        "api_key_id": k.api_key_id,
                        "secret": k.secret,
                        "project_id": k.project_id,
                        "member_id": k.member_id,
                        "comment": k.comment,
                        "scopes": list(k.scopes),
                        "tags": list(k.tags),
                        "expiration_us": k.expiration_us,
                        "created_us": k.created_us,
                        "created_by": k.created_by,
                        "deleted": k.deleted,
                    }
                    for k in self.keys.values()
                ],
                "tokens": [[t.token, t.api_key_id, t.project_id, t.expires_us] for t in self.tokens.values()],
            }

    def load(self, doc: dict) -> None:
        with self.lock:
            if doc.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {doc.get('version')!r}")
            self.projects = {}
            self.keys = {}
            self.keys_by_secret = {}
            self.tokens = {}
            f = doc.get("faults") or {}
            self.faults = Faults(**{k: v for k, v in f.items() if k in Faults.__slots__})
            self.rng = random.Random(self.faults.seed if self.faults.seed is not None else self.seed)
            for pd in doc["projects"]:
                p = Project(
                    project_id=pd["project_id"],
                    name=pd["name"],
                    owner_member_id=pd["owner_member_id"],
                    owner_email=pd["owner_email"],
                    created_us=pd["created_us"],
                    balance_id=pd["balance_id"],
                    purchase_order_id=pd["purchase_order_id"],
                    initial_balance=Decimal(pd["initial_balance"]),
                    mip_opt_out=pd["mip_opt_out"],
                    deleted=pd["deleted"],
                )
                records = [Record.from_row(row) for row in pd["records"]]
                _render_fragments(p, records)
                p.log.add(records)
                self.projects[p.project_id] = p
            for kd in doc["keys"]:
                k = Key(
                    api_key_id=kd["api_key_id"],
                    secret=kd["secret"],
                    project_id=kd["project_id"],
                    member_id=kd["member_id"],
                    comment=kd["comment"],
                    scopes=tuple(kd["scopes"]),
                    tags=tuple(kd["tags"]),
                    expiration_us=kd["expiration_us"],
                    created_us=kd["created_us"],
                    created_by=kd["created_by"],
                    deleted=kd["deleted"],
                )
                self.keys[k.api_key_id] = k
                self.keys_by_secret[k.secret] = k
            for t in doc.get("tokens", []):
                self.tokens[t[0]] = Token(*t)
            self.touch()


class Persister:
    """Debounced atomic saves (temp file + rename) of the store to ``path``."""

    def __init__(self, store: Store, path: str, delay: float = 1.0):
        self.store = store
        self.path = Path(path)
        self.delay = delay
        self.saved_version = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._save_lock = threading.Lock()

    def load_if_present(self) -> bool:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        doc = json.loads(self.path.read_text(encoding="utf-8"))
        self.store.load(doc)
        self.saved_version = self.store.version
        return True

    def save(self) -> None:
        with self._save_lock:
            version = self.store.version
            if version == self.saved_version:
                return
            doc = self.store.snapshot()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, separators=(",", ":"))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            self.saved_version = version

    def _run(self) -> None:
        while not self._stop.wait(self.delay):
            if self.store.version != self.saved_version:
                try:
                    self.save()
                except Exception as exc:  # keep serving; report on stderr
                    print(f"dgemu: saving state failed: {exc!r}", flush=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dgemu-persist", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.save()
