"""Sub-commands of the ``spacetime-md`` CLI.

Each module here defines

``add_arguments(parser: argparse.ArgumentParser) -> None``
    adds the sub-command's options; imports nothing heavy (``--help`` must be instant);
``run(args: argparse.Namespace) -> int``
    does the work (heavy imports go inside) and returns the exit code.

The module is the command of its name, and its docstring gives the help texts
(:func:`command_texts`): the first line reads "``spacetime-md NAME``: HELP." and the second
paragraph is the description that ``spacetime-md NAME --help`` shows. (A module may instead
register its own parser with ``add_parser(subparsers) -> argparse.ArgumentParser``.)

:data:`spacetime_md.cli.COMMAND_MODULES` lists the modules in the order shown by ``--help``.
"""

from __future__ import annotations


def command_texts(doc: str | None) -> tuple[str, str]:
    """``(help, description)`` of a command from its module docstring (see above)."""
    paragraphs = [" ".join(p.split()) for p in (doc or "").strip().split("\n\n")]
    title = paragraphs[0]
    if not title.startswith("``spacetime-md ") or "``: " not in title:
        raise ValueError(f"expected a docstring starting with '``spacetime-md NAME``: HELP.', got {title[:60]!r}")
    help_text = title.split("``: ", 1)[1].removesuffix(".")
    return help_text, paragraphs[1] if len(paragraphs) > 1 else help_text

