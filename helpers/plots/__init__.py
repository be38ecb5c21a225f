"""Figures: image grids and overlays (:mod:`.grids`), band analysis (:mod:`.bands`), benchmark (:mod:`.bench`)."""

from .grids import image_grid, overlay, setup_style

__all__ = ["image_grid", "overlay", "setup_style"]
