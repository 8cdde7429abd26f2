"""The ``tenure`` command: operator tools over every service (``python -m tenure_cli``).

The one package that imports the services' subcommands: ``libs/`` imports no service, so
the command is assembled here, above them (see :mod:`tenure_cli.command`).
"""
