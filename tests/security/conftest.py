"""Security suite fixtures: the CLI (``kl_env``, ``run_cli``), the live API (``api``) and the served app
with arranged data (``site``: API and web UI) of the scenario, API and web suites, reused as they are."""

from tests.api.conftest import api  # noqa: F401
from tests.scenario.conftest import kl_env, run_cli  # noqa: F401
from tests.web.conftest import site  # noqa: F401
