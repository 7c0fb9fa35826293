"""Plate benchmark: the agent's plate pipeline, today's recognizer and rapidocr, in one run.

Reads the ground-truthed photos in ``../shared/datasets/plates/{us,eu}`` (never copied into the
repository) and prints, per set, per half of the fixed dev split (``training/plate_eval_split.toml``:
``tune`` photos may choose rules, thresholds and checkpoints, ``report`` photos only report) and
per system: top-1 exact, top-5, detection rate, median and p95 milliseconds per image, peak RSS,
and the misses grouped by the format family the labelled plate fits (``agent.lane.plate_formats``;
``none`` when it fits no known format). Each system runs in its own subprocess so that its peak
RSS is its own. Timing covers ``read()`` on an already decoded image, models loaded.

Systems: ``agent`` (this tree), ``baseline`` (the recognizer at git revision ``--baseline-rev``,
code and models extracted with ``git archive``: "today's recognizer" before the trained
models) and ``rapidocr`` (off the shelf, the tallest line of 4-8 plate characters).

Detection counts an image as found when the centre of some returned plate box lies inside the
labelled plate box (labels box the whole plate; the agent's box is grown from the character
line, so IoU is also printed for the top-1 box: the share with IoU >= 0.5).

Run from the repository root::

    .venv/bin/python bench/bench_plates.py            # all three systems, both sets, both halves
    .venv/bin/python bench/bench_plates.py --systems agent --sets us --halves tune --stages

The rapidocr baseline needs the ``rapidocr`` package (in the ``dev`` dependency group).
For tuning (on the tune half only), environment variables override the agent's settings:
``BENCH_MODELS_DIR``, ``BENCH_DET_SIDE`` (full-pass long side), ``BENCH_COARSE_SIDE``,
``BENCH_ACCEPT``, ``BENCH_MAX_LINES``, ``BENCH_SECOND_LOOKS`` (comma-separated, empty for none)
and ``BENCH_SECOND_LOOK_LINES``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import string
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets" / "plates"
SPLIT_FILE = REPO / "training" / "plate_eval_split.toml"
BASELINE_REV = "9463f7a"
"""The last commit before the trained reader and the formats table (issue 15)."""
PLATE_CHARS = set(string.digits + string.ascii_uppercase)
STAGES: dict[str, list[float]] = {"passes": [], "reads": [], "lines": []}
"""What the agent's pipeline did for the image being read (filled by agent_system)."""


def load_labels(set_dir: Path) -> list[dict[str, Any]]:
    with (set_dir / "labels.csv").open(newline="") as handle:
        return [
            {
                "file": row["file"],
                "plate": row["plate"],
                "box": (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])),
            }
            for row in csv.DictReader(handle)
        ]


def centre_inside(box: tuple[int, ...], label: tuple[int, ...]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return label[0] <= cx <= label[0] + label[2] and label[1] <= cy <= label[1] + label[3]


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the systems: each returns, per image, a list of (text, box) best first and top-5 texts ---


def agent_system(threads: int) -> Any:
    # BENCH_AGENT_ROOT: a tree extracted from another revision (the baseline system).
    sys.path.insert(0, os.environ.get("BENCH_AGENT_ROOT", str(REPO)))
    from agent.vision.reader import PlateRecognizer

    models_dir = os.environ.get("BENCH_MODELS_DIR")
    recognizer = PlateRecognizer.load(Path(models_dir) if models_dir else None, threads=threads)
    if os.environ.get("BENCH_SECOND_LOOKS") is not None:
        looks = os.environ["BENCH_SECOND_LOOKS"].split(",")
        recognizer.second_looks = tuple(float(v) for v in looks if v)
    if os.environ.get("BENCH_SECOND_LOOK_LINES"):
        recognizer.second_look_lines = int(os.environ["BENCH_SECOND_LOOK_LINES"])
    if os.environ.get("BENCH_MAX_LINES"):
        recognizer.max_lines = int(os.environ["BENCH_MAX_LINES"])
    if os.environ.get("BENCH_COARSE_SIDE"):
        recognizer.coarse_side = int(os.environ["BENCH_COARSE_SIDE"])
    if os.environ.get("BENCH_ACCEPT"):
        recognizer.accept_score = float(os.environ["BENCH_ACCEPT"])
    if os.environ.get("BENCH_DET_SIDE"):
        recognizer.detector.max_side = int(os.environ["BENCH_DET_SIDE"])

    # Stage timings: every detector pass and reader call of the current image, in ms.
    detect, read_lines = recognizer.detector.detect, recognizer.reader.read

    def timed_detect(image: Any, *, max_side: int | None = None) -> Any:
        start = time.perf_counter()
        boxes = detect(image, max_side=max_side)
        STAGES["passes"].append((time.perf_counter() - start) * 1000)
        return boxes

    def timed_read(image: Any, quads: Any) -> Any:
        start = time.perf_counter()
        readings = read_lines(image, quads)
        STAGES["reads"].append((time.perf_counter() - start) * 1000)
        STAGES["lines"].append(len(quads))
        return readings

    recognizer.detector.detect = timed_detect  # type: ignore[method-assign,assignment]
    recognizer.reader.read = timed_read  # type: ignore[method-assign,assignment]

    def run(image: Any) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
        for values in STAGES.values():
            values.clear()
        reads = recognizer.read(image)
        ranked: list[str] = []
        for plate in reads[:1]:
            ranked.extend(text for text, _ in plate.candidates)
        ranked.extend(plate.text for plate in reads[1:])
        return [(p.text, p.box) for p in reads], _distinct(ranked)[:5]

    return run


def rapidocr_system(threads: int) -> Any:
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )

    def run(image: Any) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
        result = engine(image)
        lines: list[tuple[float, str, tuple[int, ...]]] = []
        if result.boxes is not None and result.txts is not None:
            for quad, text in zip(result.boxes, result.txts, strict=True):
                clean = "".join(c for c in text.upper() if c in PLATE_CHARS)
                xs = [p[0] for p in quad]
                ys = [p[1] for p in quad]
                box = (int(min(xs)), int(min(ys)), int(max(xs) - min(xs)), int(max(ys) - min(ys)))
                if 4 <= len(clean) <= 8:
                    lines.append((box[3], clean, box))
        # The README's baseline rule: the tallest plate-like line is the plate.
        lines.sort(key=lambda item: item[0], reverse=True)
        return [(t, b) for _, t, b in lines], _distinct([t for _, t, _ in lines])[:5]

    return run


def _distinct(texts: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        seen.setdefault(text, None)
    return list(seen)


def load_split(path: Path = SPLIT_FILE) -> dict[str, dict[str, str]]:
    """Set name -> photo file -> half ('tune' or 'report')."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        set_name: {name: half for half in ("tune", "report") for name in halves[half]}
        for set_name, halves in raw.items()
    }


def label_family(plate: str) -> str:
    """The format family a labelled plate fits ('none' when it fits no known format)."""
    sys.path.insert(0, str(REPO))
    from agent.lane.plate_formats import JURISDICTIONS
    from agent.lane.plates import plate_formats

    families = {entry.code: entry.family for entry in JURISDICTIONS}
    found = sorted({families[code] for code in plate_formats(plate)})
    return "/".join(found) if found else "none"


def worker(system: str, set_dir: Path, threads: int) -> dict[str, Any]:
    """Read every photo of ``set_dir``; one record per photo (the parent splits the halves)."""
    import cv2

    cv2.setNumThreads(1)
    run = {"agent": agent_system, "baseline": agent_system, "rapidocr": rapidocr_system}[system](
        threads
    )
    records: list[dict[str, Any]] = []
    for label in load_labels(set_dir):
        image = cv2.imread(str(set_dir / label["file"]), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {set_dir / label['file']}")
        start = time.perf_counter()
        reads, top_five = run(image)
        ms = (time.perf_counter() - start) * 1000
        best = reads[0][0] if reads else None
        records.append(
            {
                "file": label["file"],
                "want": label["plate"],
                "got": best,
                "top5": top_five,
                "ms": ms,
                "detected": any(centre_inside(box, label["box"]) for _, box in reads),
                "iou50": bool(reads) and iou(reads[0][1], label["box"]) >= 0.5,
                "stages": {key: list(values) for key, values in STAGES.items()} | {"ms": ms}
                if STAGES["passes"]
                else None,
            }
        )
    return {"system": system, "set": set_dir.name, "records": records, "peak_rss_mb": peak_rss_mb()}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    times = sorted(r["ms"] for r in records)
    misses = [r for r in records if r["got"] != r["want"]]
    return {
        "images": n,
        "top1": sum(r["got"] == r["want"] for r in records) / n,
        "top5": sum(r["want"] in r["top5"] for r in records) / n,
        "detected": sum(r["detected"] for r in records) / n,
        "top1_box_iou50": sum(r["iou50"] for r in records) / n,
        "median_ms": statistics.median(times),
        "p95_ms": times[min(n - 1, round(0.95 * (n - 1)))],
        "misses": misses,
        "misses_by_family": Counter(label_family(r["want"]) for r in misses),
        "stages": summarise_stages([r["stages"] for r in records if r["stages"]]),
    }


def summarise_stages(stages: list[dict[str, Any]]) -> dict[str, float] | None:
    """Medians of the agent's stages: coarse pass, full pass, reader, and the share of
    images that needed the full-resolution pass."""
    if not stages:
        return None
    coarse_only = [s for s in stages if len(s["passes"]) == 1]
    full = [s for s in stages if len(s["passes"]) > 1]
    summary: dict[str, float] = {
        "full_pass_share": len(full) / len(stages),
        "coarse_detector_ms": statistics.median(s["passes"][0] for s in stages),
        "reader_ms": statistics.median(sum(s["reads"]) for s in stages),
        "lines_read": statistics.median(sum(s["lines"]) for s in stages),
    }
    if coarse_only:
        summary["coarse_only_image_ms"] = statistics.median(s["ms"] for s in coarse_only)
    if full:
        summary["full_detector_ms"] = statistics.median(s["passes"][1] for s in full)
        summary["full_pass_image_ms"] = statistics.median(s["ms"] for s in full)
    return summary


def baseline_tree(rev: str, into: Path) -> Path:
    """``agent/`` and ``models/`` as they were at ``rev``, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "agent", "models"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_worker(system: str, set_dir: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--worker", system, str(set_dir)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sets", nargs="+", default=["us", "eu"])
    parser.add_argument(
        "--halves", nargs="+", default=["tune", "report"], choices=["tune", "report", "all"]
    )
    parser.add_argument("--systems", nargs="+", default=["agent", "baseline", "rapidocr"])
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument(
        "--stages", action="store_true", help="print the agent's stage timings (medians)"
    )
    parser.add_argument("--json", type=Path, help="also write every record here")
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "SET_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.threads)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"python {platform.python_version()}, threads per session: {args.threads}")
    split = load_split()
    header = f"{'set':<4} {'half':<7} {'system':<9} {'n':>4} {'top1':>7} {'top5':>7} {'det':>7} {'iou50':>7} {'med ms':>8} {'p95 ms':>8} {'RSS MB':>7}  misses by family"
    print(header)
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    dump: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as scratch:
        env = dict(os.environ)
        baseline_env = dict(env)
        if "baseline" in args.systems:
            baseline_env["BENCH_AGENT_ROOT"] = str(baseline_tree(args.baseline_rev, Path(scratch)))
            baseline_env.pop("BENCH_MODELS_DIR", None)
        for set_name in args.sets:
            for system in args.systems:
                outcome = run_worker(
                    system,
                    args.datasets / set_name,
                    args.threads,
                    baseline_env if system == "baseline" else env,
                )
                dump.append(outcome)
                for half in args.halves:
                    records = [
                        r
                        for r in outcome["records"]
                        if half == "all" or split[set_name].get(r["file"]) == half
                    ]
                    result = summarise(records)
                    results[(set_name, half, system)] = result
                    families = ", ".join(
                        f"{family} {count}"
                        for family, count in sorted(result["misses_by_family"].items())
                    )
                    print(
                        f"{set_name:<4} {half:<7} {system:<9} {result['images']:>4} {result['top1']:>7.1%} "
                        f"{result['top5']:>7.1%} {result['detected']:>7.1%} {result['top1_box_iou50']:>7.1%} "
                        f"{result['median_ms']:>8.1f} {result['p95_ms']:>8.1f} {outcome['peak_rss_mb']:>7.0f}  {families}",
                        flush=True,
                    )
                    if args.stages and result.get("stages"):
                        print(
                            "    stages (medians):",
                            ", ".join(
                                f"{key} {value:.2f}"
                                if key == "full_pass_share"
                                else f"{key} {value:.1f}"
                                for key, value in result["stages"].items()
                            ),
                        )
                    if args.show_misses:
                        for miss in result["misses"]:
                            print(
                                f"    {miss['file']}: want {miss['want']} got {miss['got']} top5 {miss['top5']}"
                            )
    for set_name in args.sets:
        for half in args.halves:
            ours = results.get((set_name, half, "agent"))
            for other in ("baseline", "rapidocr"):
                base = results.get((set_name, half, other))
                if ours and base:
                    print(
                        f"{set_name} {half}: agent/{other} top-1 {ours['top1'] / max(base['top1'], 1e-9):.2f}x, "
                        f"median time {ours['median_ms'] / base['median_ms']:.2f}x"
                    )
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
