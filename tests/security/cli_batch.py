"""Run many ``keyledger`` commands in one Python process (the real entry point, ``keyledger.bootstrap.main``,
once per command with its own argv), so a table of bad inputs costs one interpreter start, not one each.

``python tests/security/cli_batch.py`` reads a JSON list of argv lists on stdin and prints a JSON list of
``{"code", "stdout", "stderr"}``; an exception escaping ``main`` is reported as code ``"traceback"``.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import traceback


def _run_one(argv: list[str]) -> dict:
    from keyledger.bootstrap import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str = 0
    sys.argv = ["keyledger", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - exactly what the catalogue must never see
            code = "traceback"
            traceback.print_exc()
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def run_batch(commands: list[list[str]], env: dict[str, str], cwd, timeout: float = 300) -> list[dict]:
    """Run ``commands`` in one subprocess with ``env`` and ``cwd``; one result per command."""
    proc = subprocess.run([sys.executable, __file__], input=json.dumps(commands),
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


if __name__ == "__main__":
    results = [_run_one(argv) for argv in json.loads(sys.stdin.read())]
    sys.stdout.write(json.dumps(results))
