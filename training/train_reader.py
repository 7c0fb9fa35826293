"""Fine-tune the plate reader on synthetic plates; write a candidate ``build/plate_reader.onnx``.

One command, end to end, on a CPU (see training/README.md for the environment)::

    nice -n 15 ~/.venvs/lane-train/bin/python -m training.train_reader

The candidate replaces ``models/``'s reader only if it reads the tune half of the dev photos
better (``bench/bench_plates.py --halves tune`` with ``BENCH_MODELS_DIR``); so far none has
(training/README.md has the figures), and the agent ships the untrained base.

1. The base is the PP-OCRv6 small recogniser shipped in the rapidocr 3.10.0 wheel (checked by
   sha256), its classifier cut to 96 classes by :func:`training.prune_reader.prune`: exactly the
   reader the agent shipped before this model.
2. It trains as a PyTorch module interpreted from the ONNX graph
   (:mod:`training.onnx_module`) on line crops rendered on the fly by
   :mod:`training.plate_render` from ``--seed`` (every batch is a function of the seed and its
   step number). The loss is CTC on the plate text plus ``--distill`` times the KL divergence
   from the untrained base's per-step output ("learning without forgetting"): synthetic
   plates alone pull the reader away from what it knew of real photos (a first run without
   the term lost 5 to 7 points on the tune half of the dev photos while its synthetic
   accuracy rose), and the base's own outputs are the only real-world knowledge there is to
   keep, since the photos may not be trained on. The first two thirds of the backbone stay
   frozen.
3. The trained weights are written back into the same graph, so the agent loads the same
   operators with new weights.

Reproducibility: the same seed, steps, batch size, thread count, torch build and font files
give the same weights; ``--threads`` is part of that because the order of floating-point sums
in a convolution depends on how the work is split.

The evaluation photos in ``../shared/datasets`` are never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnx
import torch

from training.onnx_module import OnnxModule, write_weights
from training.plate_render import LINE_HEIGHT, check_fonts, line_sample
from training.prune_reader import prune

BASE_SHA256 = "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
"""PP-OCRv6_rec_small.onnx in the rapidocr 3.10.0 wheel."""
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "build" / "plate_reader.onnx"
TRAIN_SEED = 15
VALIDATION_SEED = 1_000_015
"""Synthetic validation lines, drawn from a seed the training batches never use."""
FROZEN_NODES = 212
"""Initializers used by the graph's first nodes (about the first two thirds of the
convolutional backbone: general stroke and edge features) stay as they are; the rest of the
backbone, the attention neck and the classifier train. On two cores this halves a step's
time against training everything but the stem."""
MAX_WIDTH = 320
WARMUP_STEPS = 30


def write_bench_dir(directory: Path, reader: bytes) -> None:
    """A models directory for ``BENCH_MODELS_DIR``: the shipped detector and manifest with the
    candidate reader in place of the shipped one (its sha256 in the manifest)."""
    import re
    import shutil

    models = Path(__file__).resolve().parents[1] / "models"
    directory.mkdir(parents=True, exist_ok=True)
    manifest = (models / "manifest.toml").read_text(encoding="utf-8")
    head, marker, reader_table = manifest.partition("[models.text_reader]")
    file_name = re.search(r'file = "(.*)"', reader_table)
    if not marker or file_name is None:
        sys.exit("models/manifest.toml has no [models.text_reader] file")
    reader_table = re.sub(
        r'sha256 = ".*"', f'sha256 = "{hashlib.sha256(reader).hexdigest()}"', reader_table, count=1
    )
    for other in models.glob("*.onnx"):
        if other.name != file_name.group(1):
            shutil.copyfile(other, directory / other.name)
    (directory / file_name.group(1)).write_bytes(reader)
    (directory / "manifest.toml").write_text(head + marker + reader_table, encoding="utf-8")


def base_model_path() -> Path:
    import rapidocr  # only for its file location: the wheel ships the ONNX models

    return Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_rec_small.onnx"


def load_base(path: Path) -> onnx.ModelProto:
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != BASE_SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {BASE_SHA256} (rapidocr 3.10.0)")
    return prune(onnx.load_from_string(blob))


def class_index(model: onnx.ModelProto) -> dict[str, int]:
    meta = {entry.key: entry.value for entry in model.metadata_props}
    characters = meta["character"].splitlines()
    return {ch: index + 1 for index, ch in enumerate(characters)}


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Lines to one (N, 3, 48, W) batch normalised as the agent does; narrower lines are padded
    on the right with the normalised value 0 (mid grey)."""
    width = min(MAX_WIDTH, max(image.shape[1] for image in images))
    batch = np.zeros((len(images), 3, LINE_HEIGHT, width), np.float32)
    for index, image in enumerate(images):
        if image.shape[1] > width:
            import cv2

            image = cv2.resize(image, (width, LINE_HEIGHT), interpolation=cv2.INTER_AREA)
        normalised = image.astype(np.float32) * (2.0 / 255.0) - 1.0
        batch[index, :, :, : image.shape[1]] = normalised.transpose(2, 0, 1)
    return torch.from_numpy(batch)


def make_batch(seed: int, step: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """The batch of ``step``: a function of the seed and the step number only (so it does not
    matter which process renders it). A quarter more samples than needed are drawn, sorted by
    width, and a window of ``size`` kept, so little of a batch is padding."""
    rng = random.Random(f"{seed}:{step}")
    samples = [line_sample(rng) for _ in range(size + size // 4)]
    samples.sort(key=lambda sample: sample.image.shape[1])
    start = rng.randint(0, len(samples) - size)
    window = samples[start : start + size]
    return to_tensor([s.image for s in window]), [s.text for s in window]


class Batches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Renders the batches of steps ``first..last`` in a data-loader worker process, so the
    drawing overlaps the training step on the other core."""

    def __init__(self, seed: int, steps: int, size: int) -> None:
        self.seed, self.steps, self.size = seed, steps, size

    def __iter__(self):  # type: ignore[no-untyped-def]
        for step in range(self.steps):
            yield make_batch(self.seed, step, self.size)


def greedy(probs: np.ndarray, characters: dict[int, str]) -> str:
    best = probs.argmax(axis=-1)
    out: list[str] = []
    previous = -1
    for cls in best:
        if cls != previous and cls in characters:
            out.append(characters[cls])
        previous = int(cls)
    return "".join(out)


def validate(
    module: OnnxModule, lines: list[tuple[np.ndarray, str]], characters: dict[int, str]
) -> float:
    module.eval()
    right = 0
    with torch.no_grad():
        for image, text in lines:
            probs = module.probabilities(to_tensor([image]))[0].numpy()
            read = greedy(probs, characters)
            right += read.upper().replace("O", "0") == text.replace("O", "0")
    module.train()
    return right / len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--distill", type=float, default=1.0, help="weight of the KL term")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--frozen-nodes",
        type=int,
        default=FROZEN_NODES,
        help="the weights of the graph's first N nodes stay as they are",
    )
    parser.add_argument("--base", type=Path, default=None, help="PP-OCRv6_rec_small.onnx")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help="write an ONNX every --every steps here"
    )
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument(
        "--bench-dir",
        type=Path,
        default=None,
        help="also write a models directory with the candidate, for BENCH_MODELS_DIR",
    )
    parser.add_argument("--validation", type=int, default=300)
    args = parser.parse_args()
    if args.seed == VALIDATION_SEED:
        sys.exit("the validation seed is reserved")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    print(f"fonts: {', '.join(check_fonts())}", flush=True)
    base = load_base(args.base or base_model_path())
    index = class_index(base)
    characters = {cls: ch for ch, cls in index.items() if ch.isalnum()}
    module = OnnxModule(base)
    teacher = OnnxModule(base)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    frozen = {name for node in base.graph.node[: args.frozen_nodes] for name in node.input}
    for name, key in module.param_names.items():
        if name in frozen:
            getattr(module, key).requires_grad_(False)
    trainable = [p for p in module.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in trainable)}", flush=True)
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)

    def lr_at(step: int) -> float:
        # Constant after a fixed warm-up: the model after step k of any run is the model a
        # run of --steps k writes, so a checkpoint picked on the tune half is reproducible
        # by its step count alone.
        return args.lr * min(1.0, (step + 1) / WARMUP_STEPS)

    validation_rng = random.Random(VALIDATION_SEED)
    validation = [
        (s.image, s.text) for s in (line_sample(validation_rng) for _ in range(args.validation))
    ]
    print(
        f"base model, synthetic validation exact: {validate(module, validation, characters):.3f}",
        flush=True,
    )
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    module.train()
    started = time.monotonic()
    loader = torch.utils.data.DataLoader(
        Batches(args.seed, args.steps, args.batch),
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
    )
    for step, (batch, texts) in enumerate(loader):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        logits = module(batch)  # (N, T, C)
        student = torch.log_softmax(logits, dim=-1)
        with torch.no_grad():
            kept = torch.log_softmax(teacher(batch), dim=-1)
        forgetting = torch.nn.functional.kl_div(
            student.reshape(-1, student.shape[-1]),
            kept.reshape(-1, kept.shape[-1]),
            log_target=True,
            reduction="batchmean",
        )
        log_probs = student.permute(1, 0, 2)
        targets = torch.tensor([index[ch] for text in texts for ch in text], dtype=torch.long)
        target_lengths = torch.tensor([len(text) for text in texts], dtype=torch.long)
        input_lengths = torch.full((len(texts),), log_probs.shape[0], dtype=torch.long)
        loss = ctc(log_probs, targets, input_lengths, target_lengths) + args.distill * forgetting
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        optimiser.step()
        if step % 25 == 0:
            elapsed = time.monotonic() - started
            print(
                f"step {step} loss {loss.item():.4f} kl {forgetting.item():.4f} lr {lr_at(step):.2e} {elapsed / (step + 1):.2f} s/step",
                flush=True,
            )
        if args.checkpoints and (step + 1) % args.every == 0 and step + 1 < args.steps:
            args.checkpoints.mkdir(parents=True, exist_ok=True)
            path = args.checkpoints / f"plate_reader_step{step + 1}.onnx"
            onnx.save(write_weights(module, base), str(path))
            print(
                f"step {step + 1}: synthetic validation exact {validate(module, validation, characters):.3f}; wrote {path}",
                flush=True,
            )
    print(
        f"final synthetic validation exact: {validate(module, validation, characters):.3f}",
        flush=True,
    )
    trained = write_weights(module, base)
    onnx.checker.check_model(trained)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    blob = trained.SerializeToString()
    args.out.write_bytes(blob)
    if args.bench_dir:
        write_bench_dir(args.bench_dir, blob)
    print(
        f"wrote {args.out} sha256 {hashlib.sha256(blob).hexdigest()} in {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
