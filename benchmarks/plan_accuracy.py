"""The memory planner against measurement: for width-reduced OmniGens (DEFT r8 and LoRA r8 on every block linear),
several sequence lengths and dtype set-ups (including an int8 base), the planned vs measured bytes of saved
activations + parameters + gradients + AdamW state on this CPU (omnideft/sizing/measure.py,
omnideft/families/omnigen/plan.py). Prints a Markdown table, then one JSON object with the worst relative error
(docs/memory.md quotes it)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from omnideft.adapters.spec import AdapterSpec  # noqa: E402
from omnideft.families.omnigen.plan import measure_step, reduced_config  # noqa: E402
from omnideft.sizing.estimate import Setup  # noqa: E402

SETUPS = {"fp32": Setup(base="fp32", compute="fp32", checkpointing=False),
          "bf16": Setup(base="bf16", compute="bf16", checkpointing=False),
          "fp32 base, bf16 autocast": Setup(base="fp32", compute="bf16", checkpointing=False),
          "bf16, checkpointing": Setup(base="bf16", compute="bf16", checkpointing=True),
          "int8 base (quanto), bf16 autocast": Setup(base="int8", compute="bf16", checkpointing=False)}


def main() -> None:
    rows, worst = [], 0.0
    print("| method | set-up | width | tokens | saved KB planned / measured | total KB planned / measured "
          "| max part error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for method in ("deft", "lora"):
        spec = AdapterSpec(method=method, rank=8, projector="qr" if method == "deft" else None)
        for name, setup in SETUPS.items():
            for hidden, heads, inter in ((128, 4, 256), (192, 6, 512)):
                for side in (8, 16, 32):
                    r = measure_step(reduced_config(hidden, heads, 2, inter), spec, setup, 48, 2, side)
                    m, p = r["measured"], r["predicted"]
                    total_m, total_p = sum(m.values()), sum(p.values())
                    err = max(abs(p[k] / m[k] - 1) for k in m)
                    worst = max(worst, err)
                    rows.append({"method": method, "setup": name, "hidden": hidden, "tokens": r["seq_len"],
                                 "saved_ratio": p["saved"] / m["saved"], "total_ratio": total_p / total_m})
                    print(f"| {method} | {name} | {hidden} | {r['seq_len']} | {p['saved'] / 1e3:.0f} / "
                          f"{m['saved'] / 1e3:.0f} | {total_p / 1e3:.0f} / {total_m / 1e3:.0f} | {err:.1%} |",
                          flush=True)
    print(json.dumps({"cases": len(rows), "worst_relative_error": round(worst, 4),
                      "median_saved_ratio": sorted(r["saved_ratio"] for r in rows)[len(rows) // 2]}))


if __name__ == "__main__":
    main()
