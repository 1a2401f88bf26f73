#!/usr/bin/env python3
"""The benchmark report of scripts/bench.sh: reads the benches' JSON (target/e2e-bench.json,
target/multi-camera-bench.json) and their text output, and writes README.md with SVG plots
(plain SVG, no plotting library needed):

- fps_vs_cameras.svg: total and per-camera FPS against the number of cameras, shared engine
  and a session per camera, with the single-camera model-only rate;
- stage_latency.svg: mean and p99 ms per pipeline stage (e2e, red-light rule on);
- ours_vs_python.svg: model-only, our pipeline and the plain Python peer, per round.

    report.py --target DIR --out DIR
"""
import argparse
import datetime
import html
import json
import os
import platform

W, H = 760, 360
L, R, T, B = 70, 240, 30, 60
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"]


def esc(s):
    return html.escape(str(s))


def axes(title, xlabel, ylabel, ymax):
    ymax = ymax * 1.1 or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{esc(title)}</text>',
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
        f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">{esc(xlabel)}</text>',
        f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 {(T + H - B) / 2})">{esc(ylabel)}</text>',
    ]
    for i in range(6):
        v = ymax * i / 5
        y = H - B - (H - B - T) * i / 5
        out.append(f'<line x1="{L - 4}" y1="{y}" x2="{W - R}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4}" text-anchor="end">{v:.0f}</text>')
    return out, ymax


def legend(out, items):
    for i, (name, colour) in enumerate(items):
        y = T + 10 + i * 18
        out.append(f'<rect x="{W - R + 10}" y="{y - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{W - R + 28}" y="{y + 1}">{esc(name)}</text>')


def fps_vs_cameras(mc):
    rows = mc["rows"]
    counts = sorted({r["cameras"] for r in rows})
    model = sorted(mc["model_only_fps"])[len(mc["model_only_fps"]) // 2]
    ymax = max([model] + [r["total_fps"] for r in rows])
    out, ymax = axes("Frames per second against cameras on one node (vtest.avi)", "cameras", "FPS", ymax)
    xs = {c: L + (W - R - L) * (i + 0.5) / len(counts) for i, c in enumerate(counts)}
    y = lambda v: H - B - (H - B - T) * v / ymax
    for c in counts:
        out.append(f'<text x="{xs[c]}" y="{H - B + 16}" text-anchor="middle">{c}</text>')
    out.append(f'<line x1="{L}" y1="{y(model)}" x2="{W - R}" y2="{y(model)}" stroke="#555" stroke-dasharray="5,4"/>')
    series = [
        ("total, shared engine", True, "total_fps", COLOURS[0]),
        ("per camera, shared", True, "min_fps", COLOURS[2]),
        ("total, session per camera", False, "total_fps", COLOURS[1]),
        ("per camera, per-camera sessions", False, "min_fps", COLOURS[4]),
    ]
    for name, shared, key, colour in series:
        pts = [(xs[r["cameras"]], y(r[key])) for r in sorted(rows, key=lambda r: r["cameras"]) if r["shared"] == shared]
        if pts:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in pts]
    legend(out, [(n, c) for n, _, _, c in series] + [("model-only, 1 camera", "#555")])
    out.append("</svg>")
    return "\n".join(out)


def bars(title, ylabel, groups, names):
    """groups: [(label, [values per name])]"""
    ymax = max(v for _, vs in groups for v in vs)
    out, ymax = axes(title, "", ylabel, ymax)
    y = lambda v: H - B - (H - B - T) * v / ymax
    gw = (W - R - L) / max(len(groups), 1)
    bw = gw * 0.8 / len(names)
    for gi, (label, vs) in enumerate(groups):
        x0 = L + gi * gw + gw * 0.1
        for i, v in enumerate(vs):
            out.append(f'<rect x="{x0 + i * bw:.1f}" y="{y(v):.1f}" width="{bw - 1:.1f}" height="{H - B - y(v):.1f}" fill="{COLOURS[i]}"><title>{esc(label)} {esc(names[i])}: {v:.2f}</title></rect>')
        out.append(f'<text x="{x0 + gw * 0.4:.1f}" y="{H - B + 14}" text-anchor="end" font-size="10" transform="rotate(-30 {x0 + gw * 0.4:.1f} {H - B + 14})">{esc(label)}</text>')
    legend(out, list(zip(names, COLOURS)))
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    e2e = json.load(open(os.path.join(a.target, "e2e-bench.json")))
    mc = json.load(open(os.path.join(a.target, "multi-camera-bench.json")))
    open(os.path.join(a.out, "fps_vs_cameras.svg"), "w").write(fps_vs_cameras(mc))
    stages = [s for s in (e2e.get("stages_with_rule") or e2e["stages"]) if s["count"] > 0]
    open(os.path.join(a.out, "stage_latency.svg"), "w").write(bars(
        "Latency per stage, e2e with the red-light rule (ms)", "ms",
        [(s["stage"].split(" (")[0], [s["mean_ms"], s["p99_ms"]]) for s in stages], ["mean", "p99"]))
    py = e2e.get("python") or {}
    rounds = []
    for i, m in enumerate(e2e["model_only_fps"]):
        vs = [m, e2e["pipeline_fps"][i]]
        if py.get("fps"):
            vs.append(py["fps"][i])
        rounds.append((f"round {i + 1}", vs))
    names = ["model-only", "our pipeline"] + (["plain Python peer"] if py.get("fps") else [])
    open(os.path.join(a.out, "ours_vs_python.svg"), "w").write(bars(
        "vtest.avi: our pipeline beside the plain Python peer (FPS)", "FPS", rounds, names))

    text = lambda n: open(os.path.join(a.out, n)).read() if os.path.exists(os.path.join(a.out, n)) else "(not run)"
    med = e2e["median"]
    lines = [
        "# Benchmark report",
        "",
        f"Made by `scripts/bench.sh` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} cores. Data: vtest.avi (OpenCV's sample, a real campus "
        "video, 768x576 at 10 FPS) and the real CCPD plates in `../shared/data/real-plates/`. "
        "Each bench alternates what it compares within one run; medians are quoted.",
        "",
        "## One camera, beside the plain Python peer",
        "",
        "![ours vs python](ours_vs_python.svg)",
        "",
        f"- model-only {med['model_only_fps']:.1f} FPS, our full pipeline {med['pipeline_fps']:.1f} FPS "
        f"(pipeline / model-only {med['ratio']:.3f})",
    ]
    if py:
        lines.append(f"- plain Python peer {py['median_fps']:.1f} FPS; ours / Python {py['median_ours_over_python']:.3f} (median of per-round ratios)")
        ours_t = e2e.get("confirmed_tracks_per_class", {})
        theirs = py.get("confirmed_tracks_per_class", {})
        lines.append("- confirmed tracks per class, ours / Python: " + ", ".join(
            f"{c} {ours_t.get(c, 0)} / {theirs.get(c, 0)}" for c in sorted(set(ours_t) | set(theirs))))
    lines += [
        "",
        "## Latency per stage",
        "",
        "![stages](stage_latency.svg)",
        "",
        "## Many cameras on one node",
        "",
        "![fps vs cameras](fps_vs_cameras.svg)",
        "",
        "```", text("multi_camera.txt").strip(), "```",
        "",
        "## Outputs",
        "",
        "### e2e", "", "```", text("e2e.txt").strip(), "```", "",
        "### plates_real", "", "```", text("plates_real.txt").strip(), "```", "",
    ]
    open(os.path.join(a.out, "README.md"), "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
