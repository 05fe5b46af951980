"""The CLI's image-set commands: ``index``, ``patches``, ``neighbours``, ``map`` and ``sets``.

    camserve index DIR --set S --model M [--layers L1,L2]
    camserve patches --set S --layer L --channels 0-7 --out grid.png [--k 8]
    camserve neighbours IMAGE --set S --out row.png [--k 8] [--space features|pixels]
    camserve map --set S --out map.png [--method tsne|pca] [--grid 20]
    camserve sets [--delete S]

``camserve.render`` (and so Pillow) is imported only by the commands that draw.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

from camserve._arguments import AddCommand, checked
from camserve._commands import CommandError, collect_images
from camserve.client import ExplainClient

MAX_CHANNELS = 64
_k = checked(int, lambda value: 1 <= value <= 256, "in [1, 256]")


def parse_channels(text: str) -> list[int]:
    """``"0-7"``, ``"3"`` or ``"0,4,9-11"`` as a list of channel indices, in order given."""
    channels: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError
            channels.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"channels must look like 0-7 or 0,3,5 (indices >= 0), got {text!r}"
        ) from None
    if not 1 <= len(channels) <= MAX_CHANNELS:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_CHANNELS} channels, got {len(channels)}")
    return channels


def _ensure_parent(path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def index(args: argparse.Namespace, client: ExplainClient) -> int:
    """Index a folder's images (named by file name) into a set; one summary line."""
    paths = collect_images([args.folder])
    layers = [layer.strip() for layer in args.layers.split(",")] if args.layers else None
    result = client.index(args.set, paths, args.model, layers, progress=True)
    info = result.set
    print(
        f"{args.set}: indexed {result.indexed}, skipped {result.skipped} (already present), "
        f"failed {result.failed}; the set holds {info.size} images, {info.bytes_used} bytes "
        f"(model {info.model}, layers {', '.join(info.layers)})"
    )
    for failure in result.failures:
        print(f"  failed {failure.id}: {failure.reason}")
    return 1 if result.failed else 0


def patches(args: argparse.Namespace, client: ExplainClient) -> int:
    """One row per channel: its top patches in the set, each captioned with its activation."""
    from camserve.render.rows import picture_rows

    rows: list[tuple[str, list[tuple[Any, str]]]] = []
    layer = args.layer
    for channel in args.channels:
        items = client.top_activating(args.set, layer, channel, args.k)
        layer = layer or (items[0].layer if items else None)
        rows.append((f"ch {channel}", [(item.patch, f"{item.activation:.2f}") for item in items]))
    title = f"{args.set}: top patches of {layer or 'the first layer'}"
    figure = picture_rows(rows, cell=args.cell, title=title)
    figure.save(_ensure_parent(args.out))
    print(f"wrote {args.out} ({len(rows)} channels x up to {args.k} patches)")
    return 0


def neighbours(args: argparse.Namespace, client: ExplainClient) -> int:
    """The query image, then its nearest members, captioned with their distances."""
    from camserve.render.rows import picture_rows

    found = client.neighbours(
        args.set, image=args.image, k=args.k, space=args.space, thumbnail_size=args.cell
    )
    tiles: list[tuple[Any, str]] = [(args.image, "query")]
    for n in found:
        tiles.append((n.thumbnail_png, f"{n.distance:.3f} {n.label}"))
        print(f"{n.distance:.4f}  {n.id}  {n.label}")
    title = f"{args.set}: nearest in {args.space} space"
    picture_rows([("", tiles)], cell=args.cell, title=title).save(_ensure_parent(args.out))
    print(f"wrote {args.out}")
    return 0


def embedding_map(args: argparse.Namespace, client: ExplainClient) -> int:
    """Thumbnails placed on a grid by their position in a 2-D map of the set."""
    from camserve.render.embedding import thumbnail_map

    result = client.embedding_map(
        args.set,
        args.method,
        max_points=args.grid * args.grid,
        thumbnail_size=args.thumb,
        timeout=max(args.timeout or 0.0, 300.0),
    )
    if len(result) < 2:
        raise CommandError(f"image set {args.set!r} has fewer than 2 images to map")
    figure = thumbnail_map(result.xy, result.thumbnails(), grid=args.grid, thumb=args.thumb)
    figure.save(_ensure_parent(args.out))
    print(
        f"wrote {args.out}: {len(result)} of {result.projected} images by {result.method} position"
    )
    return 0


def sets(args: argparse.Namespace, client: ExplainClient) -> int:
    """List the server's sets, or delete one."""
    if args.delete:
        freed = client.delete_set(args.delete)
        print(f"deleted {args.delete}: {freed} bytes freed")
        return 0
    for info in client.sets():
        created = datetime.datetime.fromtimestamp(info.created).isoformat(timespec="seconds")
        print(
            f"{info.name}\t{info.size} images\t{info.bytes_used} bytes\t{info.model}\t"
            f"{','.join(info.layers)}\tcreated {created}"
        )
    return 0


def register(command: AddCommand) -> None:
    """Add the image-set commands through the CLI's ``command(name, handler, help)``."""
    sub = command("index", index, "index a folder of images into a named image set")
    sub.add_argument("folder", metavar="DIR", help="folder of images (ids: their file names)")
    sub.add_argument("--set", required=True, help="the set's name")
    sub.add_argument("--model", help="model of a new set (default: the set's, else required)")
    sub.add_argument("--layers", help="comma-separated layers (default: the model's)")

    sub = command("patches", patches, "draw the top activating patches of channels")
    sub.add_argument("--set", required=True, help="the set's name")
    sub.add_argument("--layer", help="an indexed layer (default: the set's first)")
    sub.add_argument(
        "--channels", type=parse_channels, default=parse_channels("0-7"), help="e.g. 0-7 or 0,3,5"
    )
    sub.add_argument("--k", type=_k, default=8, help="patches per channel (default 8)")
    sub.add_argument("--cell", type=_k, default=64, help="pixels per patch (default 64)")
    sub.add_argument("--out", required=True, metavar="PNG", help="picture to write")

    sub = command("neighbours", neighbours, "draw an image's nearest neighbours in a set")
    sub.add_argument("image", metavar="IMAGE", help="the query image")
    sub.add_argument("--set", required=True, help="the set's name")
    sub.add_argument("--k", type=_k, default=8, help="neighbours (default 8)")
    sub.add_argument("--space", choices=("features", "pixels"), default="features")
    sub.add_argument("--cell", type=_k, default=96, help="pixels per picture (default 96)")
    sub.add_argument("--out", required=True, metavar="PNG", help="picture to write")

    sub = command("map", embedding_map, "draw a set's thumbnails by t-SNE (or PCA) position")
    sub.add_argument("--set", required=True, help="the set's name")
    sub.add_argument("--method", choices=("tsne", "pca"), default="tsne")
    sub.add_argument("--grid", type=_k, default=20, help="cells per side (default 20)")
    sub.add_argument("--thumb", type=_k, default=48, help="pixels per thumbnail (default 48)")
    sub.add_argument("--out", required=True, metavar="PNG", help="picture to write")

    sub = command("sets", sets, "list the server's image sets, or delete one")
    sub.add_argument("--delete", metavar="SET", help="delete this set")


__all__ = ["parse_channels", "register"]
