"""Synthetic lane-camera set per format family, voted per vehicle: the agent against today's.

Renders, from an evaluation seed the reader was never trained on, ``--vehicles`` vehicles per
format family (US, MX, CA, EU, and SA: Brazil, whose plates training never draws), each as
``--frames`` whole 1280 x 720 frames of the vehicle creeping up to the booth (``training/lane_scenes.py``: plates of every jurisdiction in
``agent.lane.plate_formats`` drawn as in training, bumper stickers, dealer badges, the car
ahead's plate, motion blur, defocus, infra-red at night, glare, dirt, plate frames, noise,
JPEG). The frames are written once, losslessly, and every system reads the same files in its
own process:

* ``agent``     — this tree's recognizer and ``agent.lane.plates.vote``;
* ``baseline``  — the recognizer and vote at git revision ``--baseline-rev`` (today's, before
                  the trained reader), extracted with ``git archive``.

Per family and system: per-frame top-1, voted top-1 and top-5 per vehicle, the misses by
jurisdiction, the median ms to read a frame and to vote a crossing.

Run from the repository root::

    nice -n 10 .venv/bin/python bench/bench_plate_voting.py                  # 40 vehicles x 6
    nice -n 10 .venv/bin/python bench/bench_plate_voting.py --vehicles 10 --systems agent

Choosing a rule or a candidate reader: do it on a tune seed (4242 so far), never on the
evaluation seed; ``--frames-dir`` keeps that set's frames for the next comparison, and
``BENCH_MODELS_DIR`` points the agent system at a candidate's models directory
(``python -m training.train_reader --bench-dir``)::

    BENCH_MODELS_DIR=build/candidate .venv/bin/python bench/bench_plate_voting.py \
        --seed 4242 --vehicles 30 --systems agent --frames-dir build/lane-4242
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
REPO = Path(__file__).resolve().parents[1]
EVAL_SEED = 2027
"""Never a training seed: ``training.train_reader`` uses ``"<seed>:<step>"`` strings and
its validation seed; lane sets are drawn from ``"lane-set:<seed>:..."`` strings."""
BASELINE_REV = "9463f7a"
FAMILIES = ("US", "MX", "CA", "EU", "SA")


def render(
    directory: Path, seed: int, vehicles: int, frames: int, families: tuple[str, ...] = FAMILIES
) -> list[dict[str, Any]]:
    """Write every frame as PNG under ``directory``; return the vehicles' truth."""
    sys.path.insert(0, str(REPO))
    import cv2

    from training.lane_scenes import lane_vehicle

    truth = []
    for family in families:
        for index in range(vehicles):
            vehicle = lane_vehicle(seed, family, index, frames=frames)
            paths = []
            for number, frame in enumerate(vehicle.frames):
                path = directory / f"{family}-{index:03d}-{number}.png"
                cv2.imwrite(str(path), frame)
                paths.append(str(path))
            truth.append(
                {
                    "family": family,
                    "code": vehicle.spec.code,
                    "plate": vehicle.spec.text,
                    "frames": paths,
                }
            )
    return truth


def rendered_set(
    directory: Path, seed: int, vehicles: int, frames: int, families: tuple[str, ...]
) -> tuple[list[dict[str, Any]], Path]:
    """The lane set's truth and its file under ``directory``, rendered there unless a set of
    the same seed, vehicles, frames and families already is."""
    truth_file = directory / "truth.json"
    wanted = {"seed": seed, "vehicles": vehicles, "frames": frames, "families": list(families)}
    if truth_file.exists():
        kept = json.loads(truth_file.read_text())
        if kept.get("set") == wanted:
            print(f"reusing the frames in {directory}", flush=True)
            return kept["vehicles"], truth_file
    (directory / "frames").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    truth = render(directory / "frames", seed, vehicles, frames, families)
    print(
        f"rendered {len(truth) * frames} frames in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    truth_file.write_text(json.dumps({"set": wanted, "vehicles": truth}))
    return truth, truth_file


def worker(truth_file: Path, threads: int) -> dict[str, Any]:
    """Read and vote every vehicle in ``truth_file`` with the agent tree on ``sys.path``."""
    sys.path.insert(0, os.environ.get("BENCH_AGENT_ROOT", str(REPO)))
    import cv2

    from agent.lane.events import PlateSeen
    from agent.lane.plates import vote
    from agent.vision.reader import PlateRecognizer

    cv2.setNumThreads(1)
    models_dir = os.environ.get("BENCH_MODELS_DIR")  # a candidate reader (training/README.md)
    recognizer = PlateRecognizer.load(Path(models_dir) if models_dir else None, threads=threads)
    results = []
    for vehicle in json.loads(truth_file.read_text())["vehicles"]:
        readings = []
        frame_texts = []
        read_ms = []
        for index, path in enumerate(vehicle["frames"]):
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            started = time.perf_counter()
            found = recognizer.read(image)
            read_ms.append((time.perf_counter() - started) * 1000)
            best = found[0] if found else None
            frame_texts.append(best.text if best else None)
            if best is not None:
                readings.append(
                    PlateSeen(
                        float(index),
                        best.text,
                        best.confidence,
                        best.char_confidences,
                        best.candidates,
                    )
                )
        started = time.perf_counter()
        voted = vote(readings, top_n=5)
        vote_us = (time.perf_counter() - started) * 1e6
        results.append(
            {
                "frames": frame_texts,
                "voted": voted.text if voted else None,
                "top5": [c.text for c in voted.candidates] if voted else [],
                "read_ms": read_ms,
                "vote_us": vote_us,
            }
        )
    return {"results": results}


def baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            "--format=tar",
            rev,
            "agent",
            "models",
            "firmware_bridge",
        ],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=40, help="per family")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument(
        "--families",
        nargs="+",
        choices=FAMILIES,
        default=list(FAMILIES),
        help="format families to render (a vehicle's frames do not depend on the others)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--systems", nargs="+", default=["agent", "baseline"])
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument(
        "--frames-dir",
        type=Path,
        help="keep the rendered frames here and reuse them when the seed, vehicles and frames "
        "match (comparing candidate readers on one set without rendering it again)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads)))
        return 0
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(
        f"{args.vehicles} vehicles per family x {args.frames} frames (1280x720), eval seed {args.seed}, "
        f"threads {args.threads}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-lane-") as scratch:
        root = Path(scratch)
        truth, truth_file = rendered_set(
            args.frames_dir or root, args.seed, args.vehicles, args.frames, tuple(args.families)
        )
        outcomes = {}
        for system in args.systems:
            env = dict(os.environ)
            if system == "baseline":
                tree = root / "baseline"
                tree.mkdir()
                env["BENCH_AGENT_ROOT"] = str(baseline_tree(args.baseline_rev, tree))
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--threads",
                    str(args.threads),
                    "--worker",
                    str(truth_file),
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            outcomes[system] = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    print(
        f"{'family':<6} {'system':<9} {'n':>4} {'frame top1':>10} {'voted top1':>10} {'voted top5':>10} {'read ms':>8} {'vote us':>8}  misses by jurisdiction"
    )
    for family in args.families:
        for system, results in outcomes.items():
            pairs = [(t, r) for t, r in zip(truth, results, strict=True) if t["family"] == family]
            n = len(pairs)
            frames = [(t["plate"], text) for t, r in pairs for text in r["frames"]]
            frame_top1 = sum(want == got for want, got in frames) / len(frames)
            voted = sum(t["plate"] == r["voted"] for t, r in pairs) / n
            top5 = sum(t["plate"] in r["top5"] for t, r in pairs) / n
            read_ms = statistics.median(ms for _, r in pairs for ms in r["read_ms"])
            vote_us = statistics.median(r["vote_us"] for _, r in pairs)
            misses = Counter(t["code"] for t, r in pairs if t["plate"] != r["voted"])
            listed = ", ".join(f"{code} {count}" for code, count in sorted(misses.items()))
            print(
                f"{family:<6} {system:<9} {n:>4} {frame_top1:>10.1%} {voted:>10.1%} {top5:>10.1%} {read_ms:>8.1f} {vote_us:>8.0f}  {listed}",
                flush=True,
            )
            if args.show_misses:
                for t, r in pairs:
                    if t["plate"] != r["voted"]:
                        print(
                            f"    {t['code']} want {t['plate']} voted {r['voted']} frames {r['frames']}"
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
