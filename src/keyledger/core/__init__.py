"""Core: money, time, errors, ids, configuration and secrets at rest. Imports no other keyledger layer."""
