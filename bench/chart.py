"""results.json -> chart.png: throughput and p50/p99 against concurrency, one column per model.
Runs in bench/.venvs/report (matplotlib pinned in bench/requirements.txt)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"byoc": "Flask+gunicorn (BYOC)", "byoc-same": "Flask+gunicorn (BYOC), our workers", "mms": "sagemaker-inference+MMS", "mlserver": "MLServer batching",
          "ours": "this project (host)", "ours-container": "this project (container)"}
STYLE = {"byoc": ("tab:gray", "o"), "byoc-same": ("silver", "o"), "mms": ("tab:brown", "s"), "mlserver": ("tab:purple", "^"),
         "ours": ("tab:green", "D"), "ours-container": ("tab:olive", "v")}


def main(src, dst):
    res = json.load(open(src))
    models = list(res["models"])
    fig, axes = plt.subplots(2, len(models), figsize=(5.2 * len(models), 8), squeeze=False)
    for j, m in enumerate(models):
        ax_t, ax_l = axes[0][j], axes[1][j]
        for r in res["runs"]:
            if r["model"] != m or r.get("status") != "ok":
                continue
            color, marker = STYLE.get(r["stack"], ("k", "x"))
            cs = [l["connections"] for l in r["levels"]]
            ax_t.plot(cs, [l["rps"] for l in r["levels"]], marker=marker, color=color, label=LABELS.get(r["stack"]))
            ax_l.plot(cs, [l["p50_ms"] for l in r["levels"]], marker=marker, color=color, label=LABELS.get(r["stack"]) + " p50")
            ax_l.plot(cs, [l["p99_ms"] for l in r["levels"]], marker=marker, color=color, ls="--", alpha=0.6,
                      label=LABELS.get(r["stack"]) + " p99")
        tf = res["inprocess"].get(m)
        if tf and tf.get("status") == "ok":
            ax_t.axhline(tf["best_items_per_s"], color="tab:blue", ls=":",
                         label=f"TF in-process best batch ({tf['best_batch']})")
            ax_t.axhline(tf["batch1"]["calls_per_s"], color="tab:cyan", ls=":", label="TF in-process batch 1")
        ax_t.set_title(f"{m}: throughput")
        ax_t.set_xlabel("connections")
        ax_t.set_ylabel("requests/s (TF lines: items/s)")
        ax_t.set_xscale("log", base=2)
        ax_t.set_yscale("log")
        ax_l.set_title(f"{m}: latency (solid p50, dashed p99)")
        ax_l.set_xlabel("connections")
        ax_l.set_ylabel("ms")
        ax_l.set_xscale("log", base=2)
        ax_l.set_yscale("log")
        for ax in (ax_t, ax_l):
            ax.grid(True, which="both", alpha=0.3)
            levels = sorted({l["connections"] for r in res["runs"] if r["model"] == m for l in r.get("levels", [])})
            if levels:
                ax.set_xticks(levels)
                ax.set_xticklabels([str(c) for c in levels])
        ax_t.legend(fontsize=7)
    meta = res["meta"]
    fig.suptitle(f"{meta['vcpus']} vCPU {meta['arch']}, wrk 1 thread, one example per request, {meta['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
