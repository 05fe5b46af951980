"""``camserve``: explain images, build reports and embedding maps, and inspect a server.

    camserve explain IMAGES... --out DIR [--model M] [--method gradcam] [--targets 3,5]
        [--option name=value]...   (every method the server lists; see _explain_outputs)
    camserve report DIR --out report.html [--model M] [--methods gradcam,saliency,occlusion]
        [--option occlusion.window=8]... [--images-beside]
    camserve embed DIR [--plot map.png] [--save vectors.npz] [--model M]
    camserve index DIR --set S --model M | patches | neighbours IMAGE | map | sets
    camserve visualize --method M --channels 0-15 --out grid.png | adversarial IMAGE --out DIR
    camserve evaluate DIR --model M --methods gradcam,saliency [--boxes boxes.json]
        [--sanity-check] [--out eval.html] [--json eval.json]
    camserve models | methods | health

Connection options go before or after the command: ``--server`` (default
``$CAMSERVE_SERVER`` or localhost:50051), ``--token`` (default ``$CAMSERVE_TOKEN``),
``--tls``, ``--root-cert``, ``--cert``/``--key`` (mTLS), ``--timeout`` (seconds per
call, default 30). Failures print one line on stderr and exit non-zero: 1 when the
server fails or refuses, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from camserve import _commands, _evaluate_command, _job_commands, _report_command, _set_commands
from camserve._arguments import (
    CommandError,
    Handler,
    count,
    parse_indices,
    parse_option,
    percent,
    positive,
    unit,
)
from camserve.client import ExplainClient
from camserve.errors import CamserveError, DeadlineExceededError, UnavailableError

DEFAULT_SERVER = "localhost:50051"
DEFAULT_TIMEOUT_S = 30.0


def _connection_options(*, top: bool) -> argparse.ArgumentParser:
    """Connection options; the same flags work before and after the command name."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    default = None if top else argparse.SUPPRESS
    group.add_argument(
        "--server", default=default, help="host:port (default $CAMSERVE_SERVER or localhost:50051)"
    )
    group.add_argument("--token", default=default, help="bearer token (default $CAMSERVE_TOKEN)")
    group.add_argument("--tls", action="store_true", default=default, help="connect over TLS")
    group.add_argument("--root-cert", default=default, help="PEM file of trusted roots (TLS)")
    group.add_argument("--cert", default=default, help="PEM client certificate (mTLS)")
    group.add_argument("--key", default=default, help="PEM client private key (mTLS)")
    group.add_argument(
        "--timeout", type=positive, default=default, help="seconds per call (default 30)"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``camserve`` argument parser."""
    common = _connection_options(top=False)
    parser = argparse.ArgumentParser(
        prog="camserve",
        description="Explain CNN image classifiers served by a camserve server.",
        parents=[_connection_options(top=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="model name (default: the server's first model)")
        sub.add_argument(
            "--concurrency", type=count, default=8, help="requests in flight (default 8)"
        )
        sub.add_argument("--colormap", default="jet", help="heatmap colormap (default jet)")

    def map_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--targets", type=parse_indices, help="classes to explain, e.g. 3 or 0-2,7"
        )
        sub.add_argument(
            "--option",
            type=parse_option,
            action="append",
            metavar="NAME=VALUE",
            help="a method option (repeatable), e.g. window=8 or occlusion.window=8,8; "
            "`camserve methods` lists them; occlusion's window defaults to a seventh of "
            "the model's input side, its stride to half the window",
        )
        sub.add_argument("--alpha", type=unit, default=0.5, help="overlay opacity (default 0.5)")
        sub.add_argument(
            "--outlier-perc",
            type=percent,
            default=2.0,
            help="signed attributions are scaled to the value under which all but this "
            "percent of their total lies, and clipped, as Captum does (default 2)",
        )

    sub = command(
        "explain",
        _commands.explain,
        "draw each image's explanation: a captioned figure with colour scales for maps; "
        "feature maps, channel profile and filters as figures; embeddings as .npy",
    )
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    sub.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    sub.add_argument("--method", default="gradcam", help="explanation method (default gradcam)")
    sub.add_argument("--target", type=int, help="one class to explain (default: the top class)")
    sub.add_argument("--layer", help="layer to read (default: the method's)")
    sub.add_argument(
        "--plain",
        action="store_true",
        help="write the bare overlay at the image's size (no caption or scale)",
    )
    sub.add_argument(
        "--faithfulness",
        metavar="SCORES",
        help="comma-separated faithfulness scores to print with each map (deletion, "
        "insertion, drop_in_confidence, increase_in_confidence, road_morf, road_lerf)",
    )
    map_options(sub)
    model_options(sub)

    sub = command("report", _report_command.report, "write an HTML report comparing methods")
    sub.add_argument("folder", metavar="DIR", help="folder of images")
    sub.add_argument("--out", required=True, metavar="FILE", help="HTML file to write")
    sub.add_argument(
        "--methods", default="gradcam,saliency,occlusion", help="comma-separated method ids"
    )
    sub.add_argument("--title", help="report title")
    sub.add_argument(
        "--images-beside",
        action="store_true",
        help="write the pictures as JPEG files into <FILE stem>_files/ instead of the page",
    )
    map_options(sub)
    model_options(sub)

    sub = command("embed", _commands.embed, "embed a folder of images; plot a 2-D map")
    sub.add_argument("folder", metavar="DIR", help="folder of images")
    sub.add_argument("--plot", metavar="PNG", help="write a PCA scatter plot coloured by class")
    sub.add_argument("--save", metavar="NPZ", help="save names, vectors and classes (.npz)")
    sub.add_argument("--layer", help="layer to embed (default: the penultimate representation)")
    sub.add_argument("--normalize", action="store_true", help="unit-length vectors")
    model_options(sub)

    command("models", _commands.models, "list the server's models")
    command("methods", _commands.methods, "list the explanation methods and their options")
    command("health", _commands.health, "show the server's health (exit 0 when serving)")
    _set_commands.register(command)
    _job_commands.register(command)
    _evaluate_command.register(command)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: CamserveError, server: str, timeout: float) -> str:
    if isinstance(exc, UnavailableError):
        return f"cannot reach the server at {server}: {exc.details}"
    if isinstance(exc, DeadlineExceededError):
        return f"no answer from {server} within {timeout:g} s ({exc.details})"
    return f"{exc.code.name}: {exc.details}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    server = args.server or os.environ.get("CAMSERVE_SERVER") or DEFAULT_SERVER
    timeout = args.timeout or DEFAULT_TIMEOUT_S
    handler: Handler = args.handler
    try:
        with ExplainClient(
            server,
            timeout=timeout,
            tls=bool(args.tls),
            root_certificates=args.root_cert,
            certificate_chain=args.cert,
            private_key=args.key,
            token=args.token or os.environ.get("CAMSERVE_TOKEN") or None,
        ) as client:
            return handler(args, client)
    except CamserveError as exc:
        message = _describe(exc, server, timeout)
    except (CommandError, ImportError) as exc:
        message = str(exc)
    except (OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        message, code = "interrupted", 130
        print(f"camserve: {message}", file=sys.stderr)
        return code
    print(f"camserve: error: {_one_line(message)}", file=sys.stderr)
    return 1


__all__ = ["build_parser", "main"]
