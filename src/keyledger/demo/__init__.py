"""The demo: starts dgemu, sets up a connection, customers and keys, sends a month of realistic traffic
through the emulator, then syncs, reports and reconciles. It sits above every feature (it shows them
all) and below ``bootstrap``, which mounts ``keyledger demo``."""
