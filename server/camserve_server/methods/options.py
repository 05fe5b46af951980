"""The option schema, under the name the method modules import it by (``..options``)."""

from ..options import Option, OptionValue, parse_options

__all__ = ["Option", "OptionValue", "parse_options"]
