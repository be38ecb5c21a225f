"""Attribute evaluator: a small CNN that reads the ground-truth attributes off an image.

It is trained on renders of the synthetic world only (augmented with blur, noise and
speckle so that it tolerates the generator's artefacts) and shares no weights with the
generator or its CLIP. For the embedded model it is a sharper alignment metric than
CLIPScore: it says exactly which shape, colour, size, position and pattern an image
shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import world as toyworld

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(toyworld.ATTRIBUTES)


class AttributeEvaluator(nn.Module):
    """CNN with one classification head per attribute of :data:`toyworld.ATTRIBUTES`."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )

        self.width = width
        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width), block(4 * width, 4 * width))
        # 64 -> 4x4 feature map; keep the spatial layout (position matters)
        self.flat = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 16, 256), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(values)) for name, values in toyworld.ATTRIBUTES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: float ``(n, 3, 64, 64)`` in [0, 1]. Returns logits per attribute."""
        h = self.flat(self.features(images * 2.0 - 1.0))
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray | Sequence) -> list[dict[str, str]]:
        """Predicted attribute values for each image (uint8 HWC arrays, PIL images or a tensor)."""
        x = to_tensor(images)
        self.eval()
        logits = self.forward(x)
        idx = {name: v.argmax(-1).tolist() for name, v in logits.items()}
        return [{name: toyworld.ATTRIBUTES[name][idx[name][i]] for name in idx} for i in range(x.shape[0])]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"width": self.width, "attributes": toyworld.ATTRIBUTES}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "AttributeEvaluator":
        folder = Path(folder)
        if not (folder / "model.safetensors").exists():
            raise FileNotFoundError(f"no attribute evaluator weights in {folder} (run scripts/train_tiny_model.py)")
        config = json.loads((folder / "config.json").read_text())
        model = cls(width=config["width"])
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval()


def to_tensor(images: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """Images as float ``(n, 3, H, W)`` in [0, 1], resized to 64x64 if needed."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.ndim == 3:
            x = x[None]
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if x.max() > 1.5:
            x = x / 255.0
    else:
        if not isinstance(images, np.ndarray):
            images = np.stack([np.asarray(im) for im in images])
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        x = torch.from_numpy(arr.astype(np.float32))
        if arr.dtype == np.uint8:
            x = x / 255.0
        x = x.permute(0, 3, 1, 2)
    if x.shape[-1] != toyworld.IMAGE_SIZE:
        x = nn.functional.interpolate(x, size=(toyworld.IMAGE_SIZE,) * 2, mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, noise and speckle: the artefacts a small generator makes."""
    n = x.shape[0]
    # random blur by a 3x3 box mixed in with random strength
    blur = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(n, 1, 1, 1, generator=generator) * 0.8
    x = (1 - a) * x + a * blur
    x = x + torch.randn(x.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.08
    speckle = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator) < 0.01).float()
    x = x * (1 - speckle) + speckle * torch.rand(x.shape, generator=generator)
    gain = 1 + 0.1 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5)
    return (x * gain).clamp(0, 1)


def accuracy(
    predictions: Sequence[Mapping[str, str]], truths: Sequence[Mapping[str, str]], names: Sequence[str] | None = None
) -> dict[str, float]:
    """Fraction of images whose predicted value equals the truth, per attribute."""
    names = names or [n for n in ATTRIBUTE_NAMES if all(n in t for t in truths)]
    return {name: float(np.mean([p[name] == t[name] for p, t in zip(predictions, truths)])) for name in names}
