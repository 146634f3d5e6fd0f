"""Self-contained HTML for the reports: one file, images embedded, no script, no network.

The pieces (:func:`table`, :func:`image`, :func:`section`, ...) return HTML strings and
escape every text they are given; :func:`page` puts them in one document with its
style sheet inline. Charts are matplotlib figures embedded as base64 PNG data URIs.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f4f5f7; line-height: 1.45; }
header { background: #1d2b4f; color: #fff; padding: 22px 40px 18px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: 0.85; }
nav { background: #fff; border-bottom: 1px solid #d9dce3; padding: 8px 40px; font-size: 14px; }
nav a { margin-right: 16px; color: #1d4fa3; text-decoration: none; }
main { padding: 10px 40px 40px; max-width: 1280px; }
section { background: #fff; border: 1px solid #d9dce3; border-radius: 6px; padding: 14px 22px 18px;
          margin: 18px 0; }
h2 { font-size: 20px; margin: 4px 0 10px; border-bottom: 2px solid #e6e8ee; padding-bottom: 6px; }
h3 { font-size: 16px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d9dce3; padding: 4px 8px; text-align: right; }
th { background: #eef0f5; }
td.text, th.text { text-align: left; }
tr.flag td { background: #fde8e8; }
tr.ref td { font-weight: 600; }
.kv th { text-align: left; width: 240px; }
.kv td { text-align: left; }
.cols { display: grid; grid-template-columns: minmax(0, 1.2fr) minmax(0, 1fr); gap: 28px; }
@media (max-width: 1000px) { .cols { grid-template-columns: 1fr; } }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; }
figure img { max-width: 600px; border: 1px solid #e6e8ee; }
figcaption { font-size: 12px; color: #555; }
.note { background: #eef4fd; border-left: 4px solid #1d4fa3; padding: 8px 12px; margin: 8px 0; }
.warn { background: #fff4e0; border-left: 4px solid #d98b00; padding: 8px 12px; margin: 8px 0; }
.bad { background: #fde8e8; border-left: 4px solid #c62828; padding: 8px 12px; margin: 8px 0; }
code { background: #eef0f5; padding: 1px 4px; border-radius: 3px; }
footer { color: #666; font-size: 12px; padding: 0 40px 30px; }
"""


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


@dataclass
class Section:
    """One section of a report page (``anchor`` is its id in the table of contents)."""

    anchor: str
    title: str
    body: str


def page(title: str, subtitle: str, sections: Iterable[Section], footer: str = "") -> str:
    """A complete HTML document with the style sheet inline and a table of contents."""
    sections = list(sections)
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
        f"<main>{body}</main><footer>{esc(footer)}</footer></body></html>\n"
    )


def paragraph(text: str, kind: str = "") -> str:
    """A paragraph; ``kind`` ``note``, ``warn`` or ``bad`` draws it as a call-out."""
    return f'<p class="{esc(kind)}">{esc(text)}</p>' if kind else f"<p>{esc(text)}</p>"


def heading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def key_values(items: Mapping[str, object]) -> str:
    """A two-column table of names and values."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


Formatter = Callable[[object], str]


def table(frame: pd.DataFrame, formats: Mapping[str, Formatter] | None = None,
          row_class: Callable[[pd.Series], str] | None = None, hide: Iterable[str] = ()) -> str:
    """An HTML table of a frame; text columns left-aligned, numbers formatted by ``formats``.

    ``row_class(row)`` gives each row a CSS class (``flag``, ``ref``); ``hide`` names
    columns it may read that are not shown.
    """
    formats = formats or {}
    shown = [c for c in frame.columns if c not in set(hide)]
    text_cols = {c for c in shown if not pd.api.types.is_numeric_dtype(frame[c])
                 or pd.api.types.is_bool_dtype(frame[c])}
    head = "".join(f'<th class="{"text" if c in text_cols else ""}">{esc(c)}</th>' for c in shown)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for col in shown:
            value = row[col]
            text = formats[col](value) if col in formats else _default_format(value)
            cells.append(f'<td class="{"text" if col in text_cols else ""}">{esc(text)}</td>')
        cls = row_class(row) if row_class else ""
        body.append(f'<tr class="{esc(cls)}">{"".join(cells)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _default_format(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def pct(digits: int = 1) -> Formatter:
    """Format a share as a percentage."""
    return lambda v: "–" if v is None or v != v else f"{100 * float(v):.{digits}f}%"


def pp(digits: int = 2) -> Formatter:
    """Format a probability difference in percentage points."""
    return lambda v: "–" if v is None or v != v else f"{100 * float(v):+.{digits}f} pp"


def number(digits: int = 3) -> Formatter:
    return lambda v: "–" if v is None or v != v else f"{float(v):,.{digits}f}"


def png_bytes(fig: plt.Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (and closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def image(png: bytes, alt: str, caption: str = "") -> str:
    """A figure with the PNG embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def columns(*parts: str) -> str:
    """Parts side by side (one column on narrow screens)."""
    return f'<div class="cols">{"".join(f"<div>{p}</div>" for p in parts)}</div>'


def figures(items: Iterable[str]) -> str:
    """Figures side by side (wrapping)."""
    return f'<div class="figures">{"".join(items)}</div>'
