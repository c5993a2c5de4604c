#!/usr/bin/env python3
"""Gathers the per-run files ci/bench wrote into one results.json and
prints a table. Standard library only.

A run is three files in the runs directory, sharing a stem:
  STEM.meta.json    what ci/bench ran and the exit codes it saw
  STEM.load.json    ionet-load's JSON line (missing if it printed none)
  STEM.server.json  ionet-echo's stats line (missing if it printed none)
"""

import argparse
import json
import pathlib
import statistics
import sys


def read_json(path):
    """The JSON document in `path`, or the last line of it when the file
    holds more (a program's output); None when there is none."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def run_ok(run):
    load = run.get("load")
    return (
        run["meta"].get("load_rc") == 0
        and run["meta"].get("server_rc") == 0
        and load is not None
        and load.get("corrupted_bytes", 1) == 0
    )


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summarize(runs):
    """One row per scenario (in first-seen order): medians over repetitions."""
    groups = {}
    for run in runs:
        groups.setdefault(run["meta"]["scenario"], []).append(run)
    rows = []
    for name, group in groups.items():
        loads = [r["load"] for r in group if r.get("load")]

        def pick(key, sub=None):
            if sub:
                return median([l.get(key, {}).get(sub) for l in loads])
            return median([l.get(key) for l in loads])

        rows.append({
            "scenario": name,
            "repetitions": len(group),
            "msgs_per_sec": pick("msgs_per_sec"),
            "mib_per_sec": pick("mib_per_sec"),
            "p50_us": pick("latency_us", "p50"),
            "p99_us": pick("latency_us", "p99"),
            "p999_us": pick("latency_us", "p999"),
            "server_cpu_us_per_msg": pick("server_cpu_us_per_msg"),
            "corrupted_bytes": sum(l.get("corrupted_bytes", 0) for l in loads),
            "ok": all(run_ok(r) for r in group),
        })
    return rows


def print_table(rows, out):
    headers = ["scenario", "msgs/s", "MiB/s", "p50 us", "p99 us", "p99.9 us",
               "srv CPU us/msg", "status"]
    table = [headers]
    for r in rows:
        table.append([
            r["scenario"],
            fmt(r["msgs_per_sec"]),
            fmt(r["mib_per_sec"], 2),
            fmt(r["p50_us"], 1),
            fmt(r["p99_us"], 1),
            fmt(r["p999_us"], 1),
            fmt(r["server_cpu_us_per_msg"], 2),
            "ok" if r["ok"] else "FAIL",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        print("  ".join(cells), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, type=pathlib.Path,
                        help="directory of per-run files")
    parser.add_argument("--meta", type=pathlib.Path,
                        help="JSON file of facts about the machine and the build")
    parser.add_argument("--out", required=True, type=pathlib.Path,
                        help="results.json to write")
    args = parser.parse_args()

    runs = []
    for meta_path in sorted(args.runs.glob("*.meta.json")):
        stem = meta_path.name[: -len(".meta.json")]
        meta = read_json(meta_path)
        if meta is None:
            continue
        runs.append({
            "meta": meta,
            "load": read_json(args.runs / f"{stem}.load.json"),
            "server": read_json(args.runs / f"{stem}.server.json"),
        })
    runs.sort(key=lambda r: (r["meta"].get("order", 0), r["meta"].get("repetition", 0)))

    rows = summarize(runs)
    results = {
        "meta": read_json(args.meta) if args.meta else None,
        "summary": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print_table(rows, sys.stdout)
    return 0 if runs and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
