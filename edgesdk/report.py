"""Small report helpers: Markdown/HTML documents, tables, and latency plots (PNG).

    rep = Report("Benchmark: ppocr_cls.onnx")
    rep.paragraph("2 threads, batch 1")
    rep.table(["backend", "p50 ms"], [["onnxruntime", 1.65]])
    rep.image("latency.png", "latency distribution")
    rep.write("out/bench.md")          # .md -> Markdown, .html -> HTML; atomic

matplotlib is imported only inside `latency_plot` (a device never needs it).
"""
from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np


def write_atomic(path: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write a file via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        # mkstemp makes the file private; give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table for terminals."""
    cells = [[fmt(h) for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class Report:
    """An ordered list of blocks rendered as Markdown or HTML."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, text: str, level: int = 2) -> "Report":
        self.blocks.append(("heading", (level, text)))
        return self

    def paragraph(self, text: str) -> "Report":
        self.blocks.append(("paragraph", text))
        return self

    def bullets(self, items: Sequence[str]) -> "Report":
        self.blocks.append(("bullets", list(items)))
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> "Report":
        self.blocks.append(("table", (list(headers), [list(r) for r in rows])))
        return self

    def code(self, text: str) -> "Report":
        self.blocks.append(("code", text))
        return self

    def image(self, src: str, alt: str = "") -> "Report":
        """`src` relative to the report file."""
        self.blocks.append(("image", (src, alt)))
        return self

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                out += ["#" * value[0] + " " + value[1], ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                out += [markdown_table(*value), ""]
            elif kind == "code":
                out += ["```", value.rstrip("\n"), "```", ""]
            elif kind == "image":
                out += [f"![{value[1]}]({value[0]})", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        out = ["<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
               "th:first-child,td:first-child{text-align:left}</style>", "</head><body>", f"<h1>{e(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                out.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "paragraph":
                out.append(f"<p>{e(value)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                out.append("<table><tr>" + "".join(f"<th>{e(fmt(h))}</th>" for h in headers) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{e(fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
                           + "</table>")
            elif kind == "code":
                out.append(f"<pre>{e(value)}</pre>")
            elif kind == "image":
                out.append(f"<img src='{e(value[0])}' alt='{e(value[1])}' style='max-width:100%'>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        text = self.to_html() if path.suffix.lower() in (".html", ".htm") else self.to_markdown()
        return write_atomic(path, text)


def latency_plot(series: Mapping[str, np.ndarray], path: Union[str, Path], title: str = "Latency",
                 xlabel: str = "latency per call (ms)") -> Optional[Path]:
    """Cumulative distribution of latency samples, one line per series, as a PNG.

    Returns None (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for label, samples in series.items():
        s = np.sort(np.asarray(samples, np.float64))
        if s.size == 0:
            continue
        ax.plot(s, np.arange(1, s.size + 1) / s.size * 100, label=label, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel + " (log scale)")
    ax.set_ylabel("% of calls at or below")
    for q in (50, 90, 99):
        ax.axhline(q, color="#999", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
