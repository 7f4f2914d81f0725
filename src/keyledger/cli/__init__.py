"""Command line: the Typer root. Mounts each feature's ``cli.py`` and maps errors to exit codes once."""
