"""A drafted run config and its YAML text: the values, and the comments that explain them.

:class:`ConfigDraft` is what ``persuade init`` builds (:mod:`training.config_init`) and
writes: plain YAML whose values are exactly :attr:`ConfigDraft.values` (``yaml.safe_load``
of :meth:`ConfigDraft.to_yaml` gives them back), with every guess stated in a comment.
Values are written by ``yaml.safe_dump`` (quoting and escaping are PyYAML's); only the
layout and the comments are composed here.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import yaml

WIDTH = 100  # comment lines wrap here


@dataclass
class ConfigDraft:
    """A run config drafted from data.

    Attributes
    ----------
    values : dict
        The run config, key by key in the order written.
    header : list of str
        Comment lines at the top of the file.
    notes : dict of str to list of str
        Comment lines written before a top-level key.
    item_notes : dict of str to dict
        A comment after each item of a list or mapping key (``features``, ``arms``).
    excluded : dict of str to str
        Columns that are not features, each with the reason (also in the comments).
    problems : list of str
        What validation still refuses in the data with this config (also in the header).
    """

    values: dict[str, Any]
    header: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    item_notes: dict[str, dict[Any, str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        """The config as annotated YAML text."""
        lines = [c for line in self.header for c in _comments(line)]
        for key, value in self.values.items():
            notes = self.notes.get(key, [])
            if notes:
                lines += [""] + [c for line in notes for c in _comments(line)]
            items = self.item_notes.get(key)
            if items is not None and isinstance(value, list) and value:
                lines.append(f"{_flow(key)}:")
                lines += [_with_note(f"  - {_flow(v)}", items.get(v)) for v in value]
            elif items is not None and isinstance(value, dict) and value:
                lines.append(f"{_flow(key)}:")
                lines += [_with_note(f"  {_flow(k)}: {_flow(v)}", items.get(k)) for k, v in value.items()]
            else:
                lines.append(f"{_flow(key)}: {_flow(value)}")
        return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (flow style), quoted where YAML needs it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text:  # a string with a line break in it: double-quoted, escaped, on one line
        text = yaml.safe_dump(value, default_flow_style=True, default_style='"', width=2**31, sort_keys=False,
                              allow_unicode=True).removesuffix("\n").removesuffix("\n...")
    return text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _comments(text: str) -> list[str]:
    """``text`` as comment lines of at most :data:`WIDTH` characters (a ``- item`` indented under its dash)."""
    text = _one_line(text)
    if not text:
        return [""]
    indent = "  " if text.startswith("- ") else ""
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2, subsequent_indent=indent, break_long_words=False,
                                                   break_on_hyphens=False)]


def _with_note(line: str, note: str | None) -> str:
    return f"{line}  # {_one_line(note)}" if note else line
