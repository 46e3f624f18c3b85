"""BG-Synth: the embedded procedural stand-in for BG60k (categories, products, brands)."""

from bg_platform.data.synth.backgrounds import PAINTERS
from bg_platform.data.synth.brands import BRANDS
from bg_platform.data.synth.generator import CATEGORIES, generate, plan, read_info, render_sample
from bg_platform.data.synth.products import FAMILIES

__all__ = ["BRANDS", "CATEGORIES", "FAMILIES", "PAINTERS", "generate", "plan", "read_info", "render_sample"]
