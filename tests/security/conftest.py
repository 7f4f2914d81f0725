"""Security suite fixtures: the CLI (``kl_env``, ``run_cli``) and the live API (``api``) of the scenario
and API suites, reused as they are."""

from tests.api.conftest import api  # noqa: F401
from tests.scenario.conftest import kl_env, run_cli  # noqa: F401
