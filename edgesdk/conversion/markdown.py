"""report.md and accuracy_latency.png of a conversion, from its report.json dict."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def plot(path: Path, rows: list[dict[str, Any]], chosen_key: str, title: str) -> bool:
    pts = [r for r in rows if r.get("latency") and r.get("accuracy")]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for r in pts:
        x = r["latency"]["p50_ms"]
        y = r["accuracy"]["cosine"]
        chosen = r["key"] == chosen_key
        ax.scatter([x], [y], s=90 if chosen else 40, marker="*" if chosen else "o",
                   color="tab:red" if chosen else ("tab:gray" if r.get("within_budget") is False else "tab:blue"))
        ax.annotate(r["key"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("latency p50 (ms, this machine)")
    ax.set_ylabel("cosine similarity to the original (held-out)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown(report: dict[str, Any], plotted: bool) -> str:
    from ..report import Report

    r = report
    rep = Report(f"Conversion report: {r['model']['file']} for {r['profile']['name']}")
    chosen = r["chosen"]
    rep.paragraph(f"**Chosen: {chosen['name']}** ({chosen['backend']}, file {chosen['precision']}, runtime "
                  f"precision {chosen.get('runtime_precision') or chosen['precision']}) - {r['decision']}.")
    rep.paragraph(f"Accuracy budget: drop <= {r['budget']} ({r['accuracy_measure']}). Mode: {r['mode']}. "
                  f"Profile is this host: {r['profile']['is_this_host']}.")
    _variants(rep, r)
    if plotted:
        rep.image("accuracy_latency.png", "accuracy against latency")
    for v in r["variants"]:
        if v.get("guard"):
            _guard(rep, v["key"], v["guard"])
    if r.get("warnings"):
        rep.heading("Warnings")
        rep.bullets(r["warnings"])
    _verified(rep, r)
    rep.heading("Graph preparation")
    rep.table(["pass", "changes", "s"], [[p["name"], "; ".join(p["changes"]) or "-", p["seconds"]] for p in r["passes"]])
    if r.get("pruning"):
        rep.heading("Pruning")
        rep.paragraph(r["pruning"]["markdown"])
    if r.get("distillation"):
        rep.paragraph(r["distillation"]["markdown"])
    _calibration(rep, r.get("calibration"))
    if r.get("notes"):
        rep.heading("Notes")
        rep.bullets(r["notes"])
    if r.get("stages"):
        rep.heading("Stages")
        rep.table(["stage", "s", "summary"], [[s["name"], s["seconds"], s["summary"]] for s in r["stages"]])
    return rep.to_markdown()


def _variants(rep: Any, r: dict[str, Any]) -> None:
    chosen = r["chosen"]
    rows = []
    for v in r["variants"]:
        acc = v.get("accuracy") or {}
        lat = v.get("latency") or {}
        rows.append([v["key"] + (" *" if v["key"] == chosen["key"] else ""), v["precision"],
                     v.get("runtime_precision") or "-", _mb(v.get("size_bytes")), v.get("size_ratio"),
                     lat.get("p50_ms"), v.get("speedup"), acc.get("cosine"), acc.get("cosine_min"),
                     acc.get("max_abs"), acc.get("top1_agreement"), *verdict_cells(v),
                     (v.get("error") or "")[:120]])
    rep.heading("Variants")
    rep.table(["variant", "file", "runtime", "MB", "size ratio", "p50 ms", "speed-up", "cosine", "worst cos",
               "max abs", "top-1", "metric", "held-out n", "drop [95% interval]", "verdict", "error"], rows)
    against = r.get("ratios_against") or "onnxruntime fp32 of the prepared model"
    rep.paragraph(f"Ratios are against {against}, measured in the same run on this machine (noisy; compare within "
                  "one report).")
    _held_out(rep, r)


def verdict_cells(row: dict[str, Any]) -> list[Any]:
    """metric, held-out n (deciding samples; boxes for detectors), drop [interval], verdict of a
    report row (a row compared but never judged says so rather than pass for unchecked)."""
    verdict, acc = row.get("verdict"), row.get("accuracy")
    if not verdict:
        if acc:
            return [acc.get("kind"), acc.get("samples"), f"{acc['drop']:.4f}", "not judged (no interval)"]
        return ["-", "-", "-", "not checked"]
    n = str(verdict["judged"]) + ("" if verdict.get("boxes") is None else f" ({verdict['boxes']} boxes)")
    ci = "" if verdict["interval"] is None else " [{:.4f}, {:.4f}]".format(*verdict["interval"])
    return [verdict["metric"], n, f"{verdict['drop']:.4f}{ci}", verdict["verdict"]]


def _held_out(rep: Any, r: dict[str, Any]) -> None:
    """One line per checked variant: the Verdict's own summary, then its warnings."""
    judged = [v for v in r["variants"] if v.get("verdict")]
    if not judged:
        return
    rep.heading("Held-out judgement", 3)
    lines = []
    for v in judged:
        lines.append(f"{v['key']}: {v['verdict']['summary']}")
        lines += [f"{v['key']}: WARNING: {w}" for w in v["verdict"]["warnings"]]
    rep.bullets(lines)


def _guard(rep: Any, key: str, g: dict[str, Any]) -> None:
    rep.heading(f"Accuracy guard: {key}", 3)
    rep.paragraph(f"Initial drop {g['initial_drop']:.4f} (budget {g['budget']}); final {g['final_drop']:.4f}; "
                  f"{g['candidates']} quantized layers ranked; stopped: {g['stopped']} ({g['seconds']} s).")
    if g["float_layers"]:
        rep.paragraph("Layers kept float: " + ", ".join(f"`{n}`" for n in g["float_layers"]))
    if g["steps"]:
        rep.table(["step", "layer", "drop after", "kept", "p50 ms"],
                  [[i + 1, s["layer"], s["drop"], "yes" if s["kept"] else "no (put back)", s["latency_ms"]]
                   for i, s in enumerate(g["steps"])])
    if g.get("frontier"):
        rep.paragraph("Accuracy-latency frontier (layers kept float -> drop, p50 ms):")
        rep.table(["float layers", "drop", "within budget", "p50 ms"],
                  [[len(s["excluded"]), s["drop"], "yes" if s["kept"] else "no", s["latency_ms"]]
                   for s in g["frontier"]])


def _verified(rep: Any, r: dict[str, Any]) -> None:
    rep.heading("Verified and not verified")
    for v in r["variants"]:
        items = [f"verified: {x}" for x in v.get("verified", [])] + [f"NOT verified: {x}" for x in v.get("not_verified", [])]
        items += [f"note: {x}" for x in v.get("notes", [])]
        if items:
            rep.paragraph(f"**{v['key']}**")
            rep.bullets(items)


def _calibration(rep: Any, cal: Optional[dict[str, Any]]) -> None:
    rep.heading("Calibration and held-out data")
    if cal:
        rep.bullets([f"source: {cal['source']} ({cal['kind']})",
                     f"{cal['calibration']} samples for calibration, {cal['held_out']} held out for the accuracy "
                     f"check ({cal['held_out_source']}); the guard's decisions use the same held-out samples",
                     f"model input {cal['shape']} {cal['dtype']}, preprocessed with the bundle's preprocessing"])
    else:
        rep.paragraph("No calibration data: INT8 static variants were not built and accuracy was not checked.")


def _mb(n: Optional[int]) -> Optional[float]:
    return None if n is None else round(n / 1e6, 3)
