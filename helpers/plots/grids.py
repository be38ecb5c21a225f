"""Figures shared by the notebooks: image grids and attention overlays (seaborn style)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np


#: Resolution of figures shown inline in notebooks (and embedded in the committed .ipynb files).
INLINE_DPI = 80


def setup_style() -> None:
    """The seaborn theme every notebook uses, at a resolution that keeps the committed notebooks small."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = INLINE_DPI


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 1.8,
    suptitle: str | None = None,
    row_labels: Sequence[str] | None = None,
):
    """Show images in a grid with optional titles (wrapped); returns the figure."""
    images = list(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if titles else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(np.clip(images[i], 0, 1) if np.asarray(images[i]).dtype != np.uint8 else images[i],
                  cmap=None if np.asarray(images[i]).ndim == 3 else "magma")
        if titles:
            ax.set_title(_wrap(titles[i]), fontsize=7)
    if row_labels:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a heat map (any resolution, upsampled to the image) over an RGB image."""
    import torch

    h = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    h = torch.nn.functional.interpolate(h, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    h = (h - h.min()) / (h.max() - h.min() + 1e-8)
    cmap = plt.get_cmap("jet")(h)[..., :3]
    img = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image
    return (1 - alpha) * img + alpha * cmap


def _wrap(text: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])


#: Longest side (pixels) of a saved figure and its colours: figures of this project are line plots and
#: flat-coloured renders, which a 256-colour palette keeps (the tracked tree must stay small).
MAX_SIDE, PNG_COLORS = 1600, 256


def compress_png(data: bytes, max_side: int = MAX_SIDE, colors: int = PNG_COLORS) -> bytes:
    """A PNG re-encoded with a ``colors``-colour palette, at most ``max_side`` pixels on its longest side."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image = image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, image).convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def figure_png(fig, dpi: int = 90) -> bytes:
    """The figure as a compressed PNG (:func:`compress_png`), tight bounding box."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return compress_png(buffer.getvalue())


def explorer(draw, **controls):
    """Widgets that redraw ``draw(**values)`` into an output area when the user changes one of them.

    ``controls`` are ipywidgets (``name=widget``; sliders should have ``continuous_update=False`` so a
    drag redraws once, on release). The first view is drawn as a normal cell output with the controls'
    current values, and nothing is routed through an ``Output`` widget while a notebook runs headless
    (``interact`` does that, and it can stall nbclient/nbmake). Returns the widget box, or ``None``
    (static view only) when ipywidgets is not installed or ``controls`` is empty.
    """
    from IPython.display import display

    try:
        import ipywidgets as widgets
    except ImportError:
        widgets = None
    values = {name: getattr(w, "value", w) for name, w in controls.items()}
    if widgets is None or not controls:
        draw(**values)
        return None
    out = widgets.Output()

    def update(_change=None) -> None:
        with out:
            out.clear_output(wait=True)
            draw(**{name: w.value for name, w in controls.items()})

    for w in controls.values():
        w.observe(update, names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())), out])
    box.update = update  # for tests and scripted use
    display(box)
    draw(**values)
    return box
