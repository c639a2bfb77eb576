"""results.json -> results.md (tables, ratios against the best peer and TF in-process, target check)."""
from __future__ import annotations

import json
import sys

from .stacks import LABELS, PEER_STACKS

OURS = ("ours", "ours-container")


def _fmt(v, nd=1):
    if v is None:
        return ""
    if isinstance(v, (int, float)):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}"
    return str(v)


def _ratio(a, b):
    if not b:
        return ""
    v = a / b
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.3f}x"


def _level(run, c):
    return next((l for l in run.get("levels", []) if l["connections"] == c), None)


def label(run):
    base = LABELS.get(run["stack"], run["stack"])
    if run["stack"] in ("byoc", "byoc-same", "mms", "mlserver") and run.get("workers"):
        base += f", {run['workers']} worker{'s' if run['workers'] > 1 else ''}"
    elif run["stack"].startswith("ours") and run.get("workers"):
        base += f", {run['workers']} worker{'s' if run['workers'] > 1 else ''} (default)"
    return base


def _runs(results, model):
    return [r for r in results["runs"] if r["model"] == model]


def best_peer(results, model, c, key="rps"):
    best = None
    for r in _runs(results, model):
        if r["stack"] in PEER_STACKS and r.get("status") == "ok":
            l = _level(r, c)
            if l and (best is None or l[key] > best[1][key]):
                best = (r["stack"], l)
    return best


def ratios(results):
    """The issue-5 targets, computed for every run of this project that finished."""
    out = []
    for r in results["runs"]:
        if r["stack"] not in OURS or r.get("status") != "ok":
            continue
        m = r["model"]
        top = max(l["connections"] for l in r["levels"])
        lt, l1 = _level(r, top), _level(r, 1)
        bp = best_peer(results, m, top)
        row = {"stack": r["stack"], "model": m, "top_c": top}
        if bp and bp[1]["rps"]:
            row["vs_best_peer"] = lt["rps"] / bp[1]["rps"]
            row["best_peer"] = bp[0]
        tf = results["inprocess"].get(m, {})
        if tf.get("status") == "ok":
            row["vs_tf_best"] = lt["rps"] / tf["best_items_per_s"]
            row["vs_tf_batch1"] = lt["rps"] / tf["batch1"]["calls_per_s"]
        byocs = [x for x in _runs(results, m) if x["stack"] in ("byoc", "byoc-same") and x.get("status") == "ok"
                 and _level(x, 1)]
        if byocs and l1:
            # the stricter of the BYOC runs for latency; the one with our worker count for memory
            row["p50_c1_vs_byoc"] = l1["p50_ms"] / min(_level(x, 1)["p50_ms"] for x in byocs)
            same = [x for x in byocs if x.get("workers") == r.get("workers")]
            byoc = same[0] if same else None
            if byoc and r.get("memory_idle") and byoc.get("memory_idle"):
                row["rss_vs_byoc"] = r["memory_idle"]["rss_mib"] / byoc["memory_idle"]["rss_mib"]
                row["pss_vs_byoc"] = r["memory_idle"]["pss_mib"] / byoc["memory_idle"]["pss_mib"]
        peers_p99 = [(_level(x, top) or {}).get("p99_ms") for x in _runs(results, m)
                     if x["stack"] in PEER_STACKS and x.get("status") == "ok"]
        peers_p99 = [p for p in peers_p99 if p]
        if peers_p99:
            row["p99_top_vs_min_peer"] = lt["p99_ms"] / min(peers_p99)
        out.append(row)
    return out


TARGETS = [
    # (model, key, op, threshold, text)
    ("cifar_cnn", "vs_best_peer", ">=", 2.0, "CIFAR CNN c32 req/s >= 2x best peer"),
    ("cifar_cnn", "vs_tf_best", ">=", 0.5, "CIFAR CNN c32 req/s >= 0.5x TF in-process best batch"),
    ("mlp", "vs_best_peer", ">=", 1.3, "MLP c32 req/s >= 1.3x best peer"),
    (None, "p50_c1_vs_byoc", "<=", 1.0, "c1 p50 no worse than BYOC"),
    (None, "p99_top_vs_min_peer", "<", 1.0, "top-concurrency p99 below every peer's"),
    (None, "rss_vs_byoc", "<=", 1.0, "idle RSS no more than BYOC (same workers)"),
    (None, "pss_vs_byoc", "<=", 1.0, "idle PSS no more than BYOC (same workers)"),
]


def _byoc(results, model):
    """The BYOC pattern as issue 22 names it: Flask + gunicorn sync, 2 workers (the peer count here)."""
    runs = [r for r in _runs(results, model) if r["stack"] in ("byoc", "byoc-same") and r.get("status") == "ok"]
    two = [r for r in runs if r.get("workers") == 2]
    return (two or runs or [None])[0]


def hot_path_rows(results):
    """Issue 22's targets, each a ratio of two results of this run: (target, measured, wanted, met)."""
    rows = []

    def add(text, value, op, want):
        if value is None:
            return
        ok = value >= want if op == ">=" else value <= want
        rows.append((text, value, f"{op} {want}", "met" if ok else "MISSED"))

    def ours(model):
        return next((r for r in _runs(results, model) if r["stack"] == "ours" and r.get("status") == "ok"), None)

    for model, top, name in (("cifar_cnn", 32, "CIFAR CNN"), ("mlp", 32, "MLP"), ("resnet50", 8, "ResNet50")):
        o, b = ours(model), _byoc(results, model)
        if not o or not b:
            continue
        lo, lb = _level(o, top), _level(b, top)
        if lo and lb and lb["rps"]:
            add(f"{name} c{top} req/s vs BYOC", lo["rps"] / lb["rps"], ">=", 2.0)
        o1, b1 = _level(o, 1), _level(b, 1)
        if o1 and b1 and model != "resnet50":
            add(f"{name} c1 p50 vs BYOC's", o1["p50_ms"] / b1["p50_ms"], "<=", 0.8)
            add(f"{name} c1 p99 vs BYOC's p99", o1["p99_ms"] / b1["p99_ms"], "<=", 1.0)
        if model == "cifar_cnn" and lo and lb:
            co, cb = lo.get("cpu_ms_per_request"), lb.get("cpu_ms_per_request")
            if co and cb and cb["total"]:
                add("CNN c32 server CPU per request vs BYOC's", co["total"] / cb["total"], "<=", 0.4)
            tf = results["inprocess"].get(model, {})
            if tf.get("status") == "ok":
                add("CNN c32 req/s vs TF in-process best batch", lo["rps"] / tf["best_items_per_s"], ">=", 0.25)
        if model == "cifar_cnn" and o.get("memory_idle") and b.get("memory_idle"):
            add("CNN idle PSS vs BYOC's", o["memory_idle"]["pss_mib"] / b["memory_idle"]["pss_mib"], "<=", 1.0)
    return rows


def target_rows(results):
    rows = []
    rs = ratios(results)
    for model, key, op, thr, text in TARGETS:
        for r in rs:
            if model and r["model"] != model:
                continue
            if key not in r:
                continue
            v = r[key]
            ok = v >= thr if op == ">=" else (v <= thr if op == "<=" else v < thr)
            rows.append((text, r["stack"], r["model"], f"c{r['top_c']}" if "top" in key or "peer" in key or "tf" in key else "",
                         v, f"{op} {thr}", "met" if ok else "MISSED"))
    return rows


def cpu_table(runs, levels) -> list[str]:
    """CPU time per request of each kind of process, per level: steadier than req/s on a shared machine."""
    rows = []
    byoc = next((r for r in runs if r["stack"] == "byoc" and r.get("status") == "ok"), None)
    for r in runs:
        if r.get("status") != "ok":
            continue
        for c in levels:
            l = _level(r, c)
            cpu = (l or {}).get("cpu_ms_per_request")
            if not cpu:
                continue
            ref = ((_level(byoc, c) or {}).get("cpu_ms_per_request") or {}).get("total") if byoc else None
            roles = cpu["roles"]
            where = "; ".join(f"{role}: " + ", ".join(f"{k} {v:.3f}" for k, v in list(t.items())[:4])
                              for role, t in cpu.get("threads", {}).items() if t)
            rows.append(f"| {label(r)} | c{c} | {roles.get('master', 0):.3f} | {roles.get('http', 0):.3f} | "
                        f"{roles.get('model', 0):.3f} | **{cpu['total']:.3f}** | "
                        f"{_ratio(cpu['total'], ref) if ref else ''} | {where} |")
    if not rows:
        return []
    return ["\nServer CPU per request (ms of CPU time, summed over each kind of process and all its threads, over the "
            "measured window, divided by the requests answered; BYOC's HTTP workers hold TensorFlow):\n",
            "| stack | level | master | HTTP workers | model process | all | vs BYOC | by thread name (ms) |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def write_markdown(results, path):
    meta = results["meta"]
    L = []
    L.append("# Benchmark results\n")
    L.append(f"Run {meta['date']} on {meta['vcpus']} vCPU {meta['arch']} ({meta['cpu']}), Python {meta['python']}. "
             f"Load average at start {meta['loadavg_at_start']}, at end {meta.get('loadavg_at_end')}; "
             f"the machine is shared, so compare stacks only as ratios within this run.\n")
    L.append(f"Load: {meta['wrk']}; {meta['warmup_s']:g} s warm-up (discarded) then {meta['duration_s']:g} s per "
             f"concurrency level ({meta['concurrency']}); ResNet50 {meta['heavy_duration_s']:g} s at "
             f"{meta['heavy_concurrency']} only. Peers run with {meta['peer_workers']} workers. "
             f"Memory: summed over the server's process tree at idle after one request; RSS counts pages shared "
             f"between forked workers once per process, PSS divides them. Whole run: {meta.get('wall_s', 0):.0f} s.\n")
    for mr in meta.get("merged_runs", []):
        L.append(f"Rows for {', '.join(mr['stacks'])} were re-measured on {mr['date']} (`bench.run {' '.join(mr['argv'])}`, "
                 f"load average {mr['loadavg_at_start']}) and merged into this run.\n")
    if meta.get("rounds", 1) > 1:
        L.append(f"The HTTP stacks of each model ran side by side and were measured in turn, level by level, "
                 f"{meta['rounds']} rounds with the order rotated each round: every HTTP figure is the median of "
                 f"its {meta['rounds']} rounds (each round's req/s, p50, p99 and CPU are in results.json).\n")
    if meta.get("ours_env"):
        L.append(f"This project's server ran with {' '.join(meta['ours_env'])}.\n")
    for m, info in results["models"].items():
        L.append(f"\n## {m}: {info['description']}\n")
        L.append(f"Input {tuple(info['input_shape'])}; JSON nested-list body {info['json_body_bytes']:,} bytes "
                 f"(MLServer's V2 body {info['v2_body_bytes']:,} bytes).\n")
        tf = results["inprocess"].get(m)
        if tf and tf.get("status") == "ok":
            b1, bj = tf["batch1"], tf["batch1_stdlib_json"]
            L.append(f"TensorFlow in-process: batch 1 **{_fmt(b1['calls_per_s'])}** calls/s (p50 {b1['p50_ms']:.2f} ms, "
                     f"p99 {b1['p99_ms']:.2f} ms); best batch {tf['best_batch']}: **{_fmt(tf['best_items_per_s'])}** "
                     f"items/s; batch 1 with stdlib JSON decode + encode: {_fmt(bj['calls_per_s'])}/s "
                     f"(p50 {bj['p50_ms']:.2f} ms).\n")
            per_b = ", ".join(f"{b}: {_fmt(v['items_per_s'])}" for b, v in tf["batches"].items())
            L.append(f"Items/s by batch size: {per_b}.\n")
        elif tf:
            L.append(f"TensorFlow in-process: failed ({tf.get('reason', '')[:200]}).\n")
        runs = _runs(results, m)
        levels = sorted({l["connections"] for r in runs for l in r.get("levels", [])})
        if not levels:
            levels = [1, 8, 32]
        top = max(levels)
        bp = best_peer(results, m, top)
        head = ["stack"]
        for c in levels:
            head += [f"c{c} req/s", f"c{c} p50 ms", f"c{c} p99 ms"]
        head += ["non-2xx / errors", "idle RSS MiB (PSS)", "start s", f"c{top} vs best peer", f"c{top} vs TF best batch"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for r in runs:
            lab = label(r)
            if r.get("status") != "ok":
                L.append(f"| {lab} | {r.get('status')}: {r.get('reason', '')[:160].replace('|', '/')} |" +
                         " |" * (len(head) - 2))
                continue
            cells = [lab]
            for c in levels:
                l = _level(r, c)
                cells += [_fmt(l["rps"]), _fmt(l["p50_ms"], 2), _fmt(l["p99_ms"], 1)] if l else ["", "", ""]
            errs = sum(l["non_2xx"] for l in r["levels"]), sum(l["socket_errors"] for l in r["levels"])
            mem = r.get("memory_idle", {})
            cells.append(f"{errs[0]} / {errs[1]}")
            cells.append(f"{_fmt(mem.get('rss_mib'), 0)} ({_fmt(mem.get('pss_mib'), 0)})")
            cells.append(_fmt(r.get("startup_s")))
            lt = _level(r, top)
            cells.append(_ratio(lt["rps"], bp[1]["rps"]) if lt and bp else "")
            cells.append(_ratio(lt["rps"], tf["best_items_per_s"]) if lt and tf and tf.get("status") == "ok" else "")
            L.append("| " + " | ".join(cells) + " |")
        if bp:
            bpr = next(x for x in runs if x["stack"] == bp[0])
            L.append(f"\nBest peer at c{top}: {label(bpr)} ({_fmt(bp[1]['rps'])} req/s).\n")
        L.extend(cpu_table(runs, levels))
    hot = hot_path_rows(results)
    if hot:
        L.append("\n## Targets (issue 22: the hot path), ratios from this run\n")
        L.append("| target | measured | wanted | |")
        L.append("|---|---|---|---|")
        for t, v, want, ok in hot:
            L.append(f"| {t} | {v:.2f} | {want} | {ok} |")
    rows = target_rows(results)
    if rows:
        L.append("\n## Targets (issue 5), ratios from this run\n")
        L.append("| target | stack | model | level | measured | wanted | |")
        L.append("|---|---|---|---|---|---|---|")
        for t, s, m, lv, v, want, ok in rows:
            L.append(f"| {t} | {s} | {m} | {lv} | {v:.2f} | {want} | {ok} |")
    smoke = results.get("arm64_smoke")
    if smoke:
        L.append("\n## arm64 image (functional smoke run under qemu, not timed)\n")
        if smoke["status"] == "pass":
            L.append(f"**pass**: {smoke['image']} answered /invocations for the MLP "
                     f"{smoke['seconds_to_first_answer']} s after `docker run --platform linux/arm64` "
                     f"(`uname -m` in the container: {smoke.get('uname_m')}); response `{smoke['response'][:80]}`.\n")
        else:
            L.append(f"**{smoke['status']}**: {smoke.get('reason', '')}\n")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    res = json.load(open(sys.argv[1]))
    write_markdown(res, sys.argv[2])
