"""One router per resource; each route maps HTTP onto a service call (the same services as the CLI)."""
