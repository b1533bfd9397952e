"""The report as a document: headings, paragraphs, tables and figures, written as Markdown
(figures linked) and as one self-contained HTML page (figures embedded)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd


class Document:
    """A list of blocks rendered both as Markdown and as HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame):
        if df is not None and len(df):
            self.blocks.append(("table", df))

    def img(self, path: Path, rel: str, caption: str):
        self.blocks.append(("img", path, rel, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                df = b[1]
                cols = [str(c) for c in df.columns]
                rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                for _, r in df.iterrows():
                    rows.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |")
                out.append("\n".join(rows))
            elif b[0] == "img":
                out.append(f"![{b[3]}]({b[2]})\n\n*{b[3]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;"
               "padding:3px 6px;text-align:left}th{background:#f3f3f3}.supported{color:#17702b;font-weight:bold}"
               ".contradicted{color:#b00020;font-weight:bold}.inconclusive{color:#8a6d00;font-weight:bold}"
               "img{max-width:100%}figcaption{font-style:italic;font-size:13px}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                df = b[1]
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
                body = []
                for _, r in df.iterrows():
                    tds = []
                    for v in r:
                        s = _cell(v)
                        cls = f" class='{s}'" if s in ("supported", "contradicted", "inconclusive") else ""
                        tds.append(f"<td{cls}>{_inline(s)}</td>")
                    body.append("<tr>" + "".join(tds) + "</tr>")
                out.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[3])}'>"
                           f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(s: str) -> str:
    s = html.escape(s)
    parts = s.split("**")
    s = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = s.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
