"""Plate benchmark: the agent's plate pipeline against off-the-shelf rapidocr, in one run.

Reads the ground-truthed photos in ``../shared/datasets/plates/{us,eu}`` (never copied into the
repository) and prints, per set and per system: top-1 exact, top-5, detection rate, median and
p95 milliseconds per image, and peak RSS. Each system runs in its own subprocess so that its
peak RSS is its own. Timing covers ``read()`` on an already decoded image, models loaded.

Detection counts an image as found when the centre of some returned plate box lies inside the
labelled plate box (labels box the whole plate; the agent's box is grown from the character
line, so IoU is also printed for the top-1 box: the share with IoU >= 0.5).

Run from the repository root::

    .venv/bin/python bench/bench_plates.py            # both systems, both sets
    .venv/bin/python bench/bench_plates.py --systems agent --sets us --stages

The rapidocr baseline needs the ``rapidocr`` package (in the ``dev`` dependency group).
For tuning, environment variables override the agent's settings: ``BENCH_MODELS_DIR``,
``BENCH_DET_SIDE`` (full-pass long side), ``BENCH_COARSE_SIDE``, ``BENCH_ACCEPT``,
``BENCH_MAX_LINES``, ``BENCH_SECOND_LOOKS`` (comma-separated, empty for none) and
``BENCH_SECOND_LOOK_LINES``.
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
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets" / "plates"
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
    sys.path.insert(0, str(REPO))
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


def worker(system: str, set_dir: Path, threads: int) -> dict[str, Any]:
    import cv2

    cv2.setNumThreads(1)
    run = {"agent": agent_system, "rapidocr": rapidocr_system}[system](threads)
    labels = load_labels(set_dir)
    times: list[float] = []
    stages: list[dict[str, Any]] = []
    top1 = top5 = detected = iou_ok = 0
    misses: list[str] = []
    for label in labels:
        image = cv2.imread(str(set_dir / label["file"]), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {set_dir / label['file']}")
        start = time.perf_counter()
        reads, top_five = run(image)
        times.append((time.perf_counter() - start) * 1000)
        if STAGES["passes"]:
            stages.append({key: list(values) for key, values in STAGES.items()} | {"ms": times[-1]})
        best = reads[0][0] if reads else None
        top1 += best == label["plate"]
        top5 += label["plate"] in top_five
        detected += any(centre_inside(box, label["box"]) for _, box in reads)
        iou_ok += bool(reads) and iou(reads[0][1], label["box"]) >= 0.5
        if best != label["plate"]:
            misses.append(f"{label['file']}: want {label['plate']} got {best} top5 {top_five}")
    n = len(labels)
    times.sort()
    return {
        "system": system,
        "set": set_dir.name,
        "images": n,
        "top1": top1 / n,
        "top5": top5 / n,
        "detected": detected / n,
        "top1_box_iou50": iou_ok / n,
        "median_ms": statistics.median(times),
        "p95_ms": times[min(n - 1, round(0.95 * (n - 1)))],
        "peak_rss_mb": peak_rss_mb(),
        "misses": misses,
        "stages": summarise_stages(stages),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sets", nargs="+", default=["us", "eu"])
    parser.add_argument("--systems", nargs="+", default=["agent", "rapidocr"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument(
        "--stages", action="store_true", help="print the agent's stage timings (medians)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "SET_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.threads)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"python {platform.python_version()}, threads per session: {args.threads}")
    header = f"{'set':<4} {'system':<9} {'n':>4} {'top1':>7} {'top5':>7} {'det':>7} {'iou50':>7} {'med ms':>8} {'p95 ms':>8} {'RSS MB':>7}"
    print(header)
    results: list[dict[str, Any]] = []
    for set_name in args.sets:
        for system in args.systems:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--threads",
                    str(args.threads),
                    "--worker",
                    system,
                    str(args.datasets / set_name),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{set_name:<4} {system:<9} {result['images']:>4} {result['top1']:>7.1%} "
                f"{result['top5']:>7.1%} {result['detected']:>7.1%} {result['top1_box_iou50']:>7.1%} "
                f"{result['median_ms']:>8.1f} {result['p95_ms']:>8.1f} {result['peak_rss_mb']:>7.0f}",
                flush=True,
            )
            if args.stages and result.get("stages"):
                print(
                    "    stages (medians):",
                    ", ".join(
                        f"{key} {value:.2f}" if key == "full_pass_share" else f"{key} {value:.1f}"
                        for key, value in result["stages"].items()
                    ),
                )
            if args.show_misses:
                for miss in result["misses"]:
                    print("   ", miss)
    by_key = {(r["set"], r["system"]): r for r in results}
    for set_name in args.sets:
        ours, base = by_key.get((set_name, "agent")), by_key.get((set_name, "rapidocr"))
        if ours and base:
            print(
                f"{set_name}: agent/rapidocr top-1 {ours['top1'] / max(base['top1'], 1e-9):.2f}x, "
                f"median time {ours['median_ms'] / base['median_ms']:.2f}x"
            )


if __name__ == "__main__":
    main()
