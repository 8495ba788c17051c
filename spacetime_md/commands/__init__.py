"""Sub-commands of the ``spacetime-md`` CLI.

Each module here defines

``add_parser(subparsers) -> argparse.ArgumentParser``
    registers the sub-command; imports nothing heavy (``--help`` must be instant);
``run(args: argparse.Namespace) -> int``
    does the work (heavy imports go inside) and returns the exit code.

:data:`spacetime_md.cli.COMMAND_MODULES` lists the modules in the order shown by ``--help``.
"""
