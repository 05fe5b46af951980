"""What an answer will cost, decided before any work: its heatmaps' size and its bytes.

A request is a few hundred bytes; its answer is one heatmap per target at the
output size. Left unchecked, ``output {8192 x 8192}`` and six targets made 1.6 GB
of float32 maps (and more in the intermediate copies) for a reply the message
limit refuses at the end anyway. So the reply is sized first: targets are
deduplicated, the heatmaps' bytes are added up and compared with
``--max-message-bytes``, and a request whose answer cannot fit is refused
(INVALID_ARGUMENT, naming the limit) before it is decoded or queued.

Without an explicit output size a heatmap has the picture's size, with its
longest side capped at ``DEFAULT_OUTPUT_SIDE`` (aspect kept): a 4032x3024 phone
photo gets a 1024x768 map (3 MiB of float32) instead of a 48 MB one.
"""

from __future__ import annotations

from .errors import InvalidArgument

DEFAULT_OUTPUT_SIDE = 1024
HEATMAP_BYTES = {"float32": 4, "float16": 2, "uint8": 1}
RAW_BYTES = 4  # raw maps are float32, at most the input's size
REPLY_OVERHEAD_BYTES = 64 << 10  # labels, top classes, timings, framing


def unique_classes(classes: tuple[int, ...]) -> tuple[int, ...]:
    """``classes`` without repeats, first occurrence first: a repeat adds no information."""
    return tuple(dict.fromkeys(classes))


def default_output_size(picture: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a heatmap when the request names none: the picture's size,
    scaled down (aspect kept) so that its longest side is at most ``DEFAULT_OUTPUT_SIDE``."""
    height, width = picture
    longest = max(height, width)
    if longest <= DEFAULT_OUTPUT_SIDE:
        return picture
    scale = DEFAULT_OUTPUT_SIDE / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def reply_bytes(
    targets: int,
    output: tuple[int, int],
    dtype: str,
    raw_input: tuple[int, int] | None = None,
    raw_channels: int = 3,
) -> int:
    """An upper bound of the reply's bytes: ``targets`` heatmaps of ``output`` pixels in
    ``dtype``, plus, with ``raw_input``, one float32 raw map each: ``(3, H, W)`` for an
    attribution, at most ``(H, W)`` for a CAM (its layer is no larger than the input)."""
    per_target = output[0] * output[1] * HEATMAP_BYTES[dtype]
    if raw_input is not None:
        per_target += raw_channels * raw_input[0] * raw_input[1] * RAW_BYTES
    return targets * per_target + REPLY_OVERHEAD_BYTES


def check_reply_fits(size: int, limit: int) -> None:
    """Refuse an answer of ``size`` bytes that ``limit`` would refuse: before any work when
    its size can be told from the request, else once the reply is built."""
    if size > limit:
        raise InvalidArgument(
            f"the reply would take about {size / 2**20:.1f} MiB, over the server's "
            f"{limit / 2**20:.0f} MiB message limit (--max-message-bytes): ask for less "
            "(fewer targets or channels, a smaller output size, the uint8 or float16 "
            "heatmap dtype, no raw maps)"
        )
