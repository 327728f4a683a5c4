"""The ``vos`` subcommands, one module each (``run``, ``batch``, ``eval``, ``image``, ``mask``): each
``main(args) -> int`` merges options, calls the layers below and prints messages, nothing more.

The top of the ``vos`` package: nothing else imports a command. :mod:`vos.cli` parses the command
line and imports only the module of the command it runs.
"""
