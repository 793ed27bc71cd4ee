"""``stridenet viz RUN`` (PNG figures) and ``stridenet report RUN`` (one HTML page).

Only argparse is imported here; NumPy, matplotlib and the model code load inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# the keys of stridenet.viz.gallery.SECTIONS, repeated here so that --help needs no NumPy
SECTIONS = ("curves", "evaluation", "filters", "activations", "saliency", "mistakes")


def register(subparsers: Any) -> None:
    """Add the ``viz`` and ``report`` subcommands to the ``stridenet`` parser."""
    viz = subparsers.add_parser(
        "viz", help="save PNG figures of a trained run: filters, activation maps, curves, confusion, saliency",
        description="Save PNG figures of a trained run: first-layer filters, the test images that most "
                    "activate deeper channels, activation maps of every conv/pool layer for one image, "
                    "training curves, the confusion matrix, the most confidently wrong test images and a "
                    "saliency map. Needs matplotlib (pip install 'stridenet[viz]').")
    _add_common(viz)
    viz.add_argument("--out", metavar="DIR", help="folder for the PNG files (default: RUN/viz)")
    viz.set_defaults(handler=run_viz)

    report = subparsers.add_parser(
        "report", help="write RUN/report.html: one self-contained page with every figure and table",
        description="Write one self-contained HTML page (figures embedded, no scripts, no network access): "
                    "model summary, configuration, training curves, confusion matrix, per-class accuracy, "
                    "filters, activation maps, saliency and mistakes. Needs matplotlib.")
    _add_common(report)
    report.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN/report.html)")
    report.set_defaults(handler=run_report)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by 'stridenet train'")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="PATH",
                        help="image for the activation maps and saliency: .png/.jpg (converted and resized to "
                        "the model's input) or .npy")
    source.add_argument("--index", metavar="N", type=int, default=0,
                        help="test image for the activation maps and saliency when no --image (default 0)")
    parser.add_argument("--invert", action="store_true",
                        help="invert the --image (dark strokes on white -> MNIST's light on black)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the dataset files (default: the one recorded in the run)")
    parser.add_argument("--limit-test", metavar="N", type=int,
                        help="use only the first N test images (faster)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which checkpoint to load (default best)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help="comma-separated figure sections to make (default all): " + ",".join(SECTIONS))
    parser.add_argument("--dpi", type=int, default=None, metavar="N", help="figure resolution (default 100 "
                        "for PNG files, 90 in the report)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _prepare(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load the run and the chosen image, turning the user's mistakes into ``UsageError``."""
    from stridenet.cli import UsageError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'stridenet[viz]'") from None
    from stridenet.train.images import load_image
    from stridenet.viz.run import load_run_data

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    if args.limit_test is not None and args.limit_test < 1:
        raise UsageError(f"--limit-test must be a positive integer, received {args.limit_test}")
    args.sections = None if args.only is None else [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(args.sections or ()) - set(SECTIONS))
    if unknown or args.sections == []:
        raise UsageError(f"--only: unknown sections {unknown or [args.only]}; valid: {','.join(SECTIONS)}")
    if args.dpi is not None and not 10 <= args.dpi <= 600:
        raise UsageError(f"--dpi must be between 10 and 600, received {args.dpi}")
    if args.invert and args.image is None:
        raise UsageError("--invert applies to --image only")
    if args.image is not None and not Path(args.image).is_file():
        raise UsageError(f"{args.image}: no such image file")
    print(f"loading {run_dir} ...", file=sys.stderr, flush=True)
    run = load_run_data(run_dir, data_dir=args.data_dir, limit_test=args.limit_test, checkpoint=args.checkpoint)
    image = None
    if args.image is not None:
        image, note = load_image(args.image, run.input_shape, invert=args.invert)
        if note:
            print(f"{args.image}: {note}", file=sys.stderr)
    elif run.test_images is not None and not -len(run.test_images) <= args.index < len(run.test_images):
        raise UsageError(f"--index {args.index} is outside the test set of {len(run.test_images)} images")
    return run, image


def run_viz(args: argparse.Namespace) -> int:
    """Handler of ``stridenet viz``: save the figures and list the files written."""
    from stridenet.viz.gallery import write_figures

    run, image = _prepare(args)
    out = Path(args.out) if args.out else Path(args.run) / "viz"
    paths = write_figures(run, out, image=image, index=args.index, sections=args.sections, dpi=args.dpi or 100,
                          show_progress=not args.no_progress,
                          on_write=lambda path: print(f"wrote {path}", flush=True))
    print(f"{len(paths)} figures in {out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``stridenet report``: write the HTML page."""
    from stridenet.viz.report import write_report

    run, image = _prepare(args)
    out = Path(args.out) if args.out else Path(args.run) / "report.html"
    show = not args.no_progress

    def rendered(key: str) -> None:
        print(f"  rendered {key}", file=sys.stderr, flush=True)

    path = write_report(run, out, image=image, index=args.index, sections=args.sections, dpi=args.dpi or 90,
                        show_progress=show,
                        on_figure=rendered if show else None)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
