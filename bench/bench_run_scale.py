"""What a RUN of N rows costs outside the attack itself: resume scan, bookkeeping, summary,
analysis and report, each timed in its own process with its own peak RSS.

Usage::

    # a real RUN (e.g. from bench_campaign_scale.py --memory) replicated to 100,000 rows
    ONEPIXEL_ASSETS=../shared/assets python bench/bench_run_scale.py --source /tmp/mem-run-10000 \\
        --rows 10000,100000 --work /tmp/run-scale --out bench/results/run-scale-cpu.md

The N-row RUN repeats the source RUN's attacks.csv and history.csv rows in order under the names
``normal/t0000000.png``..; its dataset folder holds N files, each a hard link to the tile its row
was attacked on, so the scan sees N files and the analysis reads real originals. The attack
itself is not rerun: its memory is bench_campaign_scale.py's business (it streams images
``batch_images`` at a time). Run the children with another ``PYTHONPATH`` to measure another
version of onepixel on the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchutil import emit, machine

STAGES = ("baseline", "resume", "bookkeeping", "summary", "analysis", "report")


def build_run(source: Path, rows: int, out: Path, dataset: Path) -> None:
    """An ``rows``-row RUN in ``out`` made of ``source``'s rows repeated under new names, and its
    dataset: ``dataset/normal/t<i>.png`` a hard link to the source dataset's file of row ``i``'s
    source row (so every row's original image is the one it was attacked on; no disk used)."""
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    source_dataset = Path(config["dataset"])
    config["dataset"] = str(dataset.resolve())
    (out / "config.json").write_text(json.dumps(config, indent=2))
    with open(source / "attacks.csv", newline="") as fh:
        reader = csv.reader(fh)
        a_header = next(reader)
        attacks = [r for r in reader if r]
    history: dict[str, list[list[str]]] = {}
    with open(source / "history.csv", newline="") as fh:
        reader = csv.reader(fh)
        h_header = next(reader)
        for r in reader:
            history.setdefault(r[0], []).append(r)
    with open(out / "attacks.csv", "w", newline="") as fa, \
            open(out / "history.csv", "w", newline="") as fhist:
        wa, wh = csv.writer(fa, lineterminator="\n"), csv.writer(fhist, lineterminator="\n")
        wa.writerow(a_header)
        wh.writerow(h_header)
        for i in range(rows):
            row = list(attacks[i % len(attacks)])
            old, row[0] = row[0], f"normal/t{i:07d}.png"
            wh.writerows([row[0], *h[1:]] for h in history.get(old, ()))
            wa.writerow(row)
            link = dataset / row[0]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.hardlink_to(source_dataset / old)


def _cpu_seconds() -> float:
    """User + system CPU time of this process (on a busy shared machine wall time is mostly
    waiting for a core)."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def child(stage: str, run: Path) -> None:
    """One stage on the RUN; prints a JSON line with its seconds and this process's peak RSS."""
    import onepixel  # noqa: F401  (the import itself is the baseline)

    t0, c0 = time.perf_counter(), _cpu_seconds()
    extra: dict = {}
    if stage == "resume":
        from onepixel.runs.store import RunStore

        config = json.loads((run / "config.json").read_text())
        extra["done"] = len(RunStore(run).open(config))
    elif stage == "bookkeeping":
        # What run_campaign holds per image besides the attack: the dataset scan, the names done
        # and the list still to do.
        from onepixel.datasets.images import count_images, scan_dataset
        from onepixel.runs.schema import record_text
        from onepixel.runs.store import RunStore

        config = json.loads((run / "config.json").read_text())
        count_images(config["dataset"])
        dataset = scan_dataset(config["dataset"])
        done = RunStore(run).open(config)
        todo = [it for it in dataset.items if record_text(dataset.relative_name(it)) not in done]
        extra.update(files=len(dataset), todo=len(todo))
    elif stage == "summary":
        from onepixel.runs.reader import read_attacks_csv
        from onepixel.runs.summary import summarize

        summarize(read_attacks_csv(run / "attacks.csv"))
    elif stage == "analysis":
        from onepixel.report import analyze_run

        analyze_run(run)
    elif stage == "report":
        from onepixel.report import write_report

        write_report(run)
    record = {"stage": stage, "seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds() - c0,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, **extra}
    print("RESULT " + json.dumps(record), flush=True)


def run_stage(stage: str, run: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", stage, "--run", str(run)],
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a real RUN folder whose rows are repeated")
    parser.add_argument("--rows", default="100000", help="row counts, e.g. 10000,100000")
    parser.add_argument("--work", required=False, default="/tmp/onepixel-run-scale")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--label", default="this checkout", help="what code ran (for the table)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.run))
        return
    lines = ["Machine: " + machine() + ".", "",
             f"Code: {args.label}. Each stage in a fresh process; peak RSS is that process's "
             "(`ru_maxrss`, the import of onepixel included); CPU s includes worker processes "
             "(the chromatic analysis reads originals in a process pool), whose largest peak "
             "RSS is the last column.", "",
             "| rows | stage | wall s | CPU s | peak RSS (MB) | worker peak RSS (MB) |",
             "|---:|---|---:|---:|---:|---:|"]
    stages = [s for s in args.stages.split(",") if s]
    for n in [int(v) for v in args.rows.split(",") if v]:
        run, dataset = Path(args.work) / f"run-{n}", Path(args.work) / f"tiles-{n}"
        for folder in (run, dataset):
            if folder.exists():
                shutil.rmtree(folder)
        build_run(Path(args.source), n, run, dataset)
        for stage in stages:
            r = run_stage(stage, run)
            lines.append(f"| {n:,} | {stage} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['worker_peak_rss_mb']:.0f} |")
            print(lines[-1], flush=True)
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
