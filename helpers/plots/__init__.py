"""Figures: image grids and overlays (:mod:`.grids`), band analysis (:mod:`.bands`), benchmark (:mod:`.bench`)."""

from .grids import explorer, image_grid, overlay, setup_style

__all__ = ["explorer", "image_grid", "overlay", "setup_style"]
