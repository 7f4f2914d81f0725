"""keyledger's REST API (``/api/v1``): a FastAPI app over the same services as the CLI.

Modules: ``app`` (the factory), ``problems`` (RFC 9457 errors), ``auth`` (admin and portal tokens, the
customer scope of every route), ``idempotency`` (``Idempotency-Key``), ``pagination`` (cursors),
``jsonout`` (exact decimals and ISO times), ``schemas`` (request bodies) and ``routes/*`` (one module
per resource). Routes translate HTTP to service calls and nothing more.
"""

from keyledger.api.app import create_app

__all__ = ["create_app"]
