"""bg-platform: e-commerce product background generation (Category-Wise + Personality-Wise generators)."""

__version__ = "0.1.0"
