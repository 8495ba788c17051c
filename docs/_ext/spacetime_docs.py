"""Sphinx directives of the spacetime_md documentation.

``public-api``
    ``.. public-api:: spacetime_md.core`` writes a summary table (autosummary) and the full
    autodoc entry of every public name of a module: its ``__all__``, or the names without a
    leading underscore that the module itself defines. The API reference therefore follows the
    code: a name added to ``__all__`` appears without editing the docs, and
    ``tests/test_docs.py`` checks that every public name is in the built inventory.

``model-card``
    ``.. model-card:: alanine_dipeptide_vacuum.json`` renders one shipped model card
    (``spacetime_md/data/models/*.json``) as tables: what the model is, the commands that made
    it, the training run and every evaluation number, as stored next to the weights.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

MODELS_DIR = Path(importlib.util.find_spec("spacetime_md").origin).parent / "data" / "models"
RETIRED_DIR = Path(__file__).resolve().parent.parent / "retired_models"


def public_names(module_name: str) -> list[str]:
    """The public names of a module: ``__all__`` if it has one, else its own non-underscore names."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
            and getattr(value, "__module__", module_name).startswith(module_name)
        ]
    return list(names)


def data_doc(module_name: str, name: str) -> list[str] | None:
    """The ``#:`` doc comment of a constant re-exported by a package, from its defining module."""
    import sys

    from sphinx.pycode import ModuleAnalyzer

    value = getattr(importlib.import_module(module_name), name)
    for sub_name, sub in sorted(sys.modules.items()):
        if sub is None or not sub_name.startswith(module_name) or vars(sub).get(name, None) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(sub_name).find_attr_docs()
        except Exception:  # noqa: BLE001 - no source: try the next module
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    return None


def summary(module_name: str, name: str) -> str:
    """First paragraph of a public name's documentation, on one line (the summary column)."""
    value = getattr(importlib.import_module(module_name), name)
    if _kind(importlib.import_module(module_name), name) == "data":
        lines = data_doc(module_name, name) or []
        doc = "\n".join(lines)
    else:
        doc = inspect.getdoc(value) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines()) or "—"


_FIELD_SECTIONS = ("Parameters", "Other Parameters")


def _notes_after_fields(lines: list[str]) -> None:
    section = None
    i = 0
    while i < len(lines) - 1:
        line, following = lines[i], lines[i + 1]
        if following.strip() and set(following.strip()) == {"-"} and line.strip():
            section = line.strip()
            i += 2
            continue
        if (section in _FIELD_SECTIONS and not line.strip() and i + 2 < len(lines)
                and lines[i + 1].strip() and not lines[i + 1].startswith(" ") and " : " not in lines[i + 1]
                and lines[i + 2].strip() and not lines[i + 2].startswith(" ")
                and set(lines[i + 2].strip()) != {"-"}):
            lines[i + 1:i + 1] = ["Notes", "-----"]
            section = "Notes"
        i += 1


def _process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Fix two things docstrings cannot say in reST before napoleon reads them.

    Free text after a Parameters section (a blank line, then unindented prose) is a Notes
    section in numpydoc; napoleon would read it as more fields, so a header is inserted.
    A constant re-exported from a submodule would show its type's docstring (``dict``'s); it
    gets its ``#:`` comment instead. Shapes such as ``shape=(|V|, H)`` in parameter types would
    be read as substitutions; their bars are escaped.
    """
    if what == "data":
        module_name, _, attr = name.rpartition(".")
        if lines and inspect.getdoc(type(obj)) and "\n".join(lines).strip() == inspect.getdoc(type(obj)).strip():
            lines[:] = data_doc(module_name, attr) or []
    _notes_after_fields(lines)
    for i, line in enumerate(lines):
        if " : " in line and "|" in line and "``" not in line and ":math:" not in line:
            lines[i] = line.replace("|", "\\|")


def _kind(module: Any, name: str) -> str:
    value = getattr(module, name)
    if inspect.isclass(value):
        return "class"
    if callable(value):
        return "function"
    return "data"


class PublicAPI(SphinxDirective):
    """Summary table + autodoc entries for every public name of a module."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        names = public_names(module_name)
        lines = [f".. currentmodule:: {module_name}", ""]
        groups = {"class": "Classes", "function": "Functions", "data": "Constants"}
        by_kind: dict[str, list[str]] = {kind: [] for kind in groups}
        for name in names:
            by_kind[_kind(module, name)].append(name)
        for kind, title in groups.items():
            if not by_kind[kind]:
                continue
            lines += [f".. rubric:: {title}", "", ".. list-table::", "   :widths: 30 70", ""]
            for name in by_kind[kind]:
                role = {"class": "class", "function": "func", "data": "data"}[kind]
                lines += [f"   * - :py:{role}:`~{module_name}.{name}`",
                          f"     - {summary(module_name, name)}"]
            lines.append("")
        for kind in groups:
            for name in by_kind[kind]:
                if kind == "class":
                    lines += [f".. autoclass:: {name}", "   :members:", "   :show-inheritance:", ""]
                elif kind == "function":
                    lines += [f".. autofunction:: {name}", ""]
                else:
                    lines += [f".. autodata:: {name}", "   :no-value:", ""]
        container = nodes.section()
        container.document = self.state.document
        self.state.nested_parse(StringList(lines, source=f"<public-api {module_name}>"), 0, container)
        return container.children


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    return str(value)


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value and all(isinstance(v, (dict, list, str, int, float, bool, type(None)))
                                                 for v in value.values()) and prefix.count(".") < 2:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    else:
        rows.append((prefix, _value(value)))


class ModelCard(SphinxDirective):
    """A shipped model card (JSON next to the weights) as a table of every field."""

    required_arguments = 1
    option_spec = {"title": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path = MODELS_DIR / self.arguments[0]
        if not path.is_file():  # the card of record of a model retired from the package
            path = RETIRED_DIR / self.arguments[0]
        self.env.note_dependency(str(path))
        card = json.loads(path.read_text())
        rows: list[tuple[str, str]] = []
        _flatten("", card, rows)
        table = nodes.table(classes=["model-card"])
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=30)
        group += nodes.colspec(colwidth=70)
        head = nodes.thead()
        head += self._row("field", "value")
        group += head
        body = nodes.tbody()
        for key, value in rows:
            body += self._row(key, value or "—", literal_key=True)
        group += body
        title = nodes.title(text=path.name)
        table.insert(0, title)
        return [table]

    @staticmethod
    def _row(key: str, value: str, literal_key: bool = False) -> nodes.row:
        row = nodes.row()
        for i, text in enumerate((key, value)):
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += nodes.literal(text=text) if (literal_key and i == 0) else nodes.Text(text)
            entry += paragraph
            row += entry
        return row


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("public-api", PublicAPI)
    app.add_directive("model-card", ModelCard)
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
