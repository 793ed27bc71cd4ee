"""``stridenet summary`` and ``stridenet models list|show``: look at an architecture before training it.

Only argparse is imported at module level; NumPy and the models load inside the handlers, so
``stridenet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

DEFAULT_INPUT = (1, 28, 28)
DEFAULT_CLASSES = 10
MODEL_HELP = "a preset name (see 'stridenet models list'), a spec file (.toml, .yaml, .yml, .json) or a one-line spec"


def register(subparsers: Any) -> None:
    """Add the ``summary`` and ``models`` subcommands."""
    summary = subparsers.add_parser(
        "summary", help="layer by layer: output shapes, parameters, receptive fields, multiply-adds, memory",
        description="Print a table of a model's layers: output shape, parameters (trainable / not), receptive "
                    "field (size, jump, start), multiply-adds and activation memory, with totals.")
    summary.add_argument("model", help=MODEL_HELP)
    _shape_arguments(summary)
    summary.add_argument("--batch-size", type=int, default=1, metavar="N",
                         help="batch size for the memory total (default 1)")
    summary.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                         help="text (a table; rich on a terminal if installed), json or markdown")
    summary.set_defaults(handler=_summary)

    models = subparsers.add_parser("models", help="list the preset architectures or write one as a spec",
                                   description="List the presets, or write any model as a spec file.")
    actions = models.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="the presets, one line each")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="write a preset (or any model) as a spec",
                              description="Write a model as a spec: sizes that follow from the input are left "
                                          "out and the classifier's output count is \"classes\", so the spec "
                                          "builds for any dataset.")
    show.add_argument("model", help=MODEL_HELP)
    show.add_argument("--format", choices=("toml", "yaml", "json", "line"), default="toml",
                      help="spec format (default toml); line is the one-line form")
    _shape_arguments(show)
    show.add_argument("--explicit", action="store_true",
                      help="write every size and count instead of leaving them to the input")
    show.set_defaults(handler=_show)
    models.set_defaults(handler=_no_action)


def _shape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", metavar="C,H,W", default=None,
                        help="shape of one input image (default: the spec's input_shape, else 1,28,28)")
    parser.add_argument("--classes", type=int, metavar="N", default=None,
                        help="number of classes (default: the spec's num_classes, else 10)")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` (or ``"3x32x32"``) -> (3, 32, 32)."""
    from stridenet.cli import UsageError

    parts = re.split(r"[,x]", text.strip())
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--input must be C,H,W with positive integers, such as 1,28,28; received {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _resolve(args: argparse.Namespace) -> tuple[tuple[int, int, int], int, str | None]:
    """Input shape, number of classes and name: the command line's, else the spec's, else defaults."""
    from stridenet.cli import UsageError
    from stridenet.models.presets import PRESETS
    from stridenet.models.spec import source_of

    data: dict[str, Any] = {}
    if args.model not in PRESETS:
        try:
            found = source_of(args.model).data
        except ValueError:
            found = None  # building the model reports it, naming the presets too
        data = found if isinstance(found, dict) else {}
    shape = parse_shape(args.input) if args.input else tuple(data.get("input_shape", DEFAULT_INPUT))
    classes = args.classes if args.classes is not None else data.get("num_classes", DEFAULT_CLASSES)
    if len(shape) != 3:
        raise UsageError(f"the spec's input_shape must be [C, H, W], received {list(shape)}")
    if not isinstance(classes, int) or classes < 1:
        raise UsageError(f"--classes must be a positive integer, received {classes!r}")
    name = args.model if args.model in PRESETS else data.get("name")
    return shape, classes, name  # type: ignore[return-value]


def _summary(args: argparse.Namespace) -> int:
    from stridenet.cli import UsageError
    from stridenet.models.summary import summary
    from stridenet.models.summary_format import print_summary

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, received {args.batch_size}")
    shape, classes, name = _resolve(args)
    try:
        result = summary(args.model, shape, num_classes=classes, batch_size=args.batch_size,
                         name=name or args.model)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.format == "json":
        sys.stdout.write(result.to_json())
    elif args.format == "markdown":
        sys.stdout.write(result.to_markdown())
    else:
        print_summary(result, sys.stdout)
    return 1 if result.error else 0


def _list(args: argparse.Namespace) -> int:
    from stridenet.models.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, builder in PRESETS.items():
        paragraph = (builder.__doc__ or "").strip().split("\n\n")[0]
        print(f"{name:<{width}}  {' '.join(paragraph.split())}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from stridenet.cli import UsageError
    from stridenet.models.line import to_line
    from stridenet.models.spec import build_model, to_spec
    from stridenet.models.spec_files import dump_spec

    shape, classes, name = _resolve(args)
    try:
        model = build_model(args.model, shape, classes, rng=0)
        spec = to_spec(model, input_shape=shape, num_classes=classes, name=name, explicit=args.explicit)
        text = to_line(spec) + "\n" if args.format == "line" else dump_spec(spec, args.format)
    except ValueError as error:
        raise UsageError(str(error)) from None
    sys.stdout.write(text)
    return 0


def _no_action(args: argparse.Namespace) -> int:
    from stridenet.cli import UsageError

    raise UsageError("choose an action: 'stridenet models list' or 'stridenet models show PRESET'")
