"""``lane-agent plate read``: read licence plates in image files with the lane's models.

For checking a camera position or a model change by hand; the running agent reads plates from
the camera in its own thread. An image that cannot be read is reported and skipped, the others
are still read, and the exit status says that something failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EX_DATAERR = 65
EX_UNAVAILABLE = 69


@click.group()
def plate() -> None:
    """Licence-plate tools."""


@plate.command("read")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and image.")
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory with manifest.toml and the model files (default: the repository's models/).",
)
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True)
def plate_read(
    images: tuple[Path, ...], as_json: bool, models_dir: Path | None, threads: int
) -> None:
    """Print the best plate in each IMAGE with its confidence and box (x, y, w, h pixels).

    Exits 65 if any image could not be read (the others are still reported) and 69 if the
    models cannot be loaded.
    """
    import cv2

    from agent.vision.models import ModelError
    from agent.vision.reader import PlateRecognizer

    try:
        recognizer = PlateRecognizer.load(models_dir, threads=threads)
    except ModelError as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(
            "hint: restore the file from the repository's models/ or pass --models DIR.", err=True
        )
        sys.exit(EX_UNAVAILABLE)
    failed = 0
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if image is None:
            failed += 1
            reason = "no such file" if not path.exists() else "not an image OpenCV can decode"
            click.echo(f"error: {path}: {reason}", err=True)
            continue
        reads = recognizer.read(image)
        best = reads[0] if reads else None
        if as_json:
            record = {
                "image": str(path),
                "plate": best.text if best else None,
                "confidence": best.confidence if best else None,
                "box": list(best.box) if best else None,
                "candidates": [[text, conf] for text, conf in best.candidates] if best else [],
            }
            click.echo(json.dumps(record))
        elif best is None:
            click.echo(f"{path}: no plate found")
        else:
            x, y, w, h = best.box
            click.echo(f"{path}: {best.text} confidence {best.confidence:.2f} box {x},{y},{w},{h}")
    if failed:
        click.echo(f"{failed} of {len(images)} image(s) could not be read.", err=True)
        sys.exit(EX_DATAERR)
