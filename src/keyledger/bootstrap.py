"""The one place things are wired: configuration -> engine, cipher, provider factory, clock.

``main()`` is the ``keyledger`` console script. Feature CLIs receive a :class:`Runtime` via ``ctx.obj``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from keyledger.core.clock import Clock, SystemClock
from keyledger.core.config import Settings, load_settings
from keyledger.db.engine import make_engine


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)


def main() -> None:
    from keyledger.cli.main import run

    run(lambda: Runtime(settings=load_settings()))


if __name__ == "__main__":
    main()
