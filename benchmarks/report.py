"""One Markdown report from the ceilings, the checks of run_gpu.sh and pytest-benchmark JSON files.

    python benchmarks/report.py bench_snake.json bench_attention.json --ceilings ceilings.json \
        --checks checks.tsv --out benchmarks/results/2026-11-26-h100.md

Each benchmark's `extra_info` is one row. What a row needs: `<provider>_ms` (median milliseconds per
provider, `ours_ms` first), `shape`, `dtype`, `mode`, and `bytes` (GB/s, against the copy ceiling) or
`flops` (TFLOP/s, against the matmul ceiling). Optional: `count` (how many layers run that shape: adds a
total row per dtype and mode, weighted by count, and `decoder_layers` says how many make a whole pass),
`targets` ({"copy_fraction": 0.85, "speedup_vs_compile": 1.3}), or `target` (minimum ratio of the other
provider's time to ours), and `op` (one table per op). Rows without `<provider>_ms` keys are left out.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections import defaultdict
from pathlib import Path


def _providers(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k[:-3] for k in row if k.endswith("_ms") and k[:-3] not in names]
    return sorted(names, key=lambda n: n != "ours")


def _throughput(row: dict, ms: float, ceilings: dict) -> tuple[str, str]:
    """(GB/s or TFLOP/s of `ms`, its share of the matching ceiling)."""
    if "bytes" in row:
        gbps = row["bytes"] / (ms * 1e6)
        ceiling = ceilings.get("copy_gbps")
        return f"{gbps:,.0f} GB/s", f"{gbps / ceiling:.0%}" if ceiling else ""
    if "flops" in row:
        tflops = row["flops"] / (ms * 1e9)
        ceiling = ceilings.get("matmul_tflops")
        return f"{tflops:.1f} TFLOP/s", f"{tflops / ceiling:.0%}" if ceiling else ""
    return "", ""


def _targets(row: dict, providers: list[str], ceilings: dict) -> str:
    ours = row.get("ours_ms")
    if not ours:
        return ""
    notes = []
    for name, wanted in (row.get("targets") or {}).items():
        if name == "copy_fraction" and "bytes" in row and ceilings.get("copy_gbps"):
            got = row["bytes"] / (ours * 1e6) / ceilings["copy_gbps"]
            notes.append(f"copy {got:.0%} (>= {wanted:.0%}: {'met' if got >= wanted else 'MISSED'})")
        elif name.startswith("speedup_vs_") and f"{name[11:]}_ms" in row:
            got = row[f"{name[11:]}_ms"] / ours
            notes.append(f"vs {name[11:]} {got:.2f}x (>= {wanted}x: {'met' if got >= wanted else 'MISSED'})")
    if row.get("target") is not None and len(providers) > 1:
        got = row[f"{providers[1]}_ms"] / ours
        notes.append(f"vs {providers[1]} >= {row['target']}x: {'met' if got >= row['target'] else 'MISSED'}")
    return "; ".join(notes)


def _totals(rows: list[dict]) -> list[dict]:
    """Per (dtype, mode): the count-weighted sum over shapes, e.g. one whole decoder pass."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if "count" in row:
            groups[(row.get("dtype"), row.get("mode"))].append(row)
    totals = []
    for (dtype, mode), members in groups.items():
        if len(members) < 2:
            continue
        layers = sum(r["count"] for r in members)
        whole = members[0].get("decoder_layers") == layers
        total = {"shape": f"**{'decoder' if whole else 'listed shapes'}, {layers} layers**", "dtype": dtype,
                 "mode": mode, "bytes": sum(r["count"] * r.get("bytes", 0) for r in members)}
        for key in {k for r in members for k in r if k.endswith("_ms")}:
            if all(key in r for r in members):
                total[key] = sum(r["count"] * r[key] for r in members)
        if "targets" in members[0]:
            total["targets"] = members[0]["targets"]
        totals.append(total)
    return totals


def table(rows: list[dict], ceilings: dict) -> list[str]:
    providers = _providers(rows)
    others = [p for p in providers if p != "ours"] if "ours" in providers else []
    head = ["shape", "dtype", "mode"] + [f"{p} ms" for p in providers]
    if "ours" in providers:
        head += ["ours rate", "of ceiling", *(f"ours vs {p}" for p in others), "targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows + _totals(rows):
        cells = [str(row.get("shape", "")), str(row.get("dtype", "")), str(row.get("mode", ""))]
        cells += [f"{row[f'{p}_ms']:.4f}" if f"{p}_ms" in row else "" for p in providers]
        if "ours" in providers and "ours_ms" in row:
            cells += list(_throughput(row, row["ours_ms"], ceilings))
            cells += [f"{row[f'{p}_ms'] / row['ours_ms']:.2f}x" if f"{p}_ms" in row else "" for p in others]
            cells.append(_targets(row, providers, ceilings))
        elif "ours" in providers:
            cells += [""] * (3 + len(others))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _read_checks(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def report(bench_files: list[Path], ceilings: dict, checks: list[list[str]]) -> str:
    device = ceilings.get("device") or next(
        (b["extra_info"].get("device") for f in bench_files for b in json.loads(f.read_text())["benchmarks"]
         if b["extra_info"].get("device")), "unknown device")
    versions = ", ".join(f"{k} {ceilings[k]}" for k in ("torch", "triton", "cuda") if ceilings.get(k))
    out = [f"# Kernel benchmarks on {device}, {datetime.date.today().isoformat()}", ""]
    if versions:
        out += [versions, ""]
    if ceilings:
        out += ["## Ceilings", "", "| ceiling | measured |", "|---|---|",
                f"| device-to-device copy, {ceilings.get('copy_bytes', 0) / 2**30:g} GiB, read + write "
                f"| {ceilings.get('copy_gbps', float('nan')):,.0f} GB/s |",
                f"| matmul {ceilings.get('matmul', '')} | {ceilings.get('matmul_tflops', float('nan')):.1f} TFLOP/s |",
                ""]
    if checks:
        out += ["## Checks", "", "| step | result | seconds |", "|---|---|---|"]
        out += [f"| {c[0]} | {c[1]} | {c[2] if len(c) > 2 else ''} |" for c in checks]
        out.append("")
    for path in bench_files:
        by_op: dict[str, list[dict]] = defaultdict(list)
        for bench in json.loads(path.read_text())["benchmarks"]:
            info = bench.get("extra_info", {})
            if any(k.endswith("_ms") for k in info):
                by_op[info.get("op", path.stem)].append(info)
        for op, rows in by_op.items():
            out += [f"## {op} ({path.name})", "", *table(rows, ceilings), ""]
    out += ["Times are medians in milliseconds; `ours vs X` is X's time over ours (above 1: ours is faster); "
            "`of ceiling` compares ours with the copy bandwidth (GB/s rows) or the matmul rate (TFLOP/s rows). "
            "Targets are printed, never asserted.", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="*", type=Path, help="pytest-benchmark JSON files (missing ones are skipped)")
    parser.add_argument("--ceilings", type=Path, help="JSON written by benchmarks/ceilings.py")
    parser.add_argument("--checks", type=Path, help="tab-separated step, result, seconds (run_gpu.sh)")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    ceilings = json.loads(args.ceilings.read_text()) if args.ceilings and args.ceilings.exists() else {}
    checks = _read_checks(args.checks) if args.checks and args.checks.exists() else []
    text = report([p for p in args.bench if p.exists()], ceilings, checks)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
