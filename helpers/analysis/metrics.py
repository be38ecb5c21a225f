"""Alignment and similarity metrics, offline for the embedded model.

* :class:`Scorer` bundles the attribute evaluator (exact attributes of an image) and a
  CLIP model for CLIPScore (``torchmetrics``), image-CLIPScore and a CLIP-feature FID.
* For the embedded model both come from ``data/models/tiny-shapes-sd`` (``clip/`` and
  ``evaluator/``); for real models pass a real CLIP id (e.g. ``openai/clip-vit-large-patch14``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..toy import model as tiny_model
from ..toy.evaluator import AttributeEvaluator, accuracy, to_tensor

ImageBatch = torch.Tensor | np.ndarray | Sequence


def images_to_uint8(images: ImageBatch) -> torch.Tensor:
    """Images (PIL list, HWC arrays in [0,1] or uint8, or a tensor) as uint8 ``(n, 3, H, W)``."""
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        return images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        images = np.stack([np.asarray(im) for im in images])
    if isinstance(images, np.ndarray):
        arr = images if images.dtype == np.uint8 else np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    x = images.float()
    x = x if x.shape[1] == 3 else x.permute(0, 3, 1, 2)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def l1_distance(a: ImageBatch, b: ImageBatch) -> np.ndarray:
    """Mean absolute pixel difference per image pair, pixels in [0, 1]."""
    xa, xb = images_to_uint8(a).float() / 255, images_to_uint8(b).float() / 255
    return (xa - xb).abs().flatten(1).mean(1).numpy()


def attribute_alignment(
    predictions: Sequence[Mapping[str, str]], truths: Sequence[Mapping[str, str]]
) -> np.ndarray:
    """Per image, the fraction of the truth's named attributes that the prediction matches."""
    return np.array([np.mean([p[k] == v for k, v in t.items() if k in p]) for p, t in zip(predictions, truths)])


def attribute_hits(
    predictions: Sequence[Mapping[str, str]], truths: Sequence[Mapping[str, str]]
) -> dict[str, np.ndarray]:
    """Per attribute, per image: 1.0 if the prediction matches the truth, 0.0 if not, NaN where the truth
    does not name that attribute (so ``np.nanmean`` gives the accuracy over the prompts that name it)."""
    names = [n for n in dict.fromkeys(k for t in truths for k in t) if any(n in p for p in predictions)]
    return {name: np.array([float(p.get(name) == t[name]) if name in t else np.nan for p, t in zip(predictions, truths)])
            for name in names}


class _FeatureTensors(torch.nn.Module):
    """Adapter: transformers 5 returns model outputs from ``get_*_features``; torchmetrics wants tensors."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out):
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class Scorer:
    """Lazy bundle of the offline metric models for one model family.

    Args:
        clip_path: a CLIPModel folder or hub id; default: the embedded model's CLIP.
        evaluator_path: the attribute evaluator folder; default: the embedded model's.
    """

    def __init__(self, clip_path: str | Path | None = None, evaluator_path: str | Path | None = None) -> None:
        model_dir = tiny_model.default_model_dir()
        self.clip_path = str(clip_path or model_dir / "clip")
        self.evaluator_path = Path(evaluator_path or model_dir / "evaluator")

    @cached_property
    def evaluator(self) -> AttributeEvaluator:
        return AttributeEvaluator.load(self.evaluator_path)

    @cached_property
    def _clip(self):
        from transformers import CLIPModel, CLIPProcessor

        if not Path(self.clip_path).exists() and "/" not in self.clip_path:
            raise FileNotFoundError(f"no CLIP model at {self.clip_path}")
        path = Path(self.clip_path)  # ours may carry a conv stem (tiny_model.load_clip); hub ids: stock
        clip = tiny_model.load_clip(path) if path.is_dir() else CLIPModel.from_pretrained(self.clip_path)
        model = _FeatureTensors(clip.eval())
        return model, CLIPProcessor.from_pretrained(self.clip_path)

    def attributes(self, images: ImageBatch) -> list[dict[str, str]]:
        """The evaluator's reading of each image (shape, color, size, position, pattern, background)."""
        return self.evaluator.predict(to_tensor(images_to_uint8(images)))

    def attribute_accuracy(self, images: ImageBatch, truths: Sequence[Mapping[str, str]]) -> dict[str, float]:
        """Fraction of images whose attribute equals the truth, per attribute named in every truth."""
        return accuracy(self.attributes(images), truths)

    def clip_score(self, images: ImageBatch, prompts: Sequence[str]) -> np.ndarray:
        """CLIPScore (100 * max(cos, 0)) per image-prompt pair, computed by ``torchmetrics``."""
        from torchmetrics.functional.multimodal import clip_score

        x = images_to_uint8(images)
        with torch.no_grad():
            return np.array([
                float(clip_score(x[i], prompts[i], model_name_or_path=lambda: self._clip)) for i in range(len(prompts))
            ])

    @torch.no_grad()
    def image_features(self, images: ImageBatch) -> torch.Tensor:
        """L2-normalised CLIP image embeddings."""
        model, processor = self._clip
        inputs = processor(images=list(images_to_uint8(images)), return_tensors="pt")
        feats = model.get_image_features(pixel_values=inputs["pixel_values"])
        return torch.nn.functional.normalize(feats, dim=-1)

    def image_clip_score(self, images: ImageBatch, references: ImageBatch) -> np.ndarray:
        """Image-CLIPScore: 100 * cosine similarity of CLIP image embeddings, pairwise."""
        a, b = self.image_features(images), self.image_features(references)
        return (100 * (a * b).sum(-1).clamp(min=0)).numpy()

    def clip_fid(self, images: ImageBatch, references: ImageBatch) -> float:
        """FID between two image sets in our CLIP's image-feature space (``torchmetrics``).

        Not Inception FID: it uses the embedded CLIP image tower as the feature extractor,
        so values are only comparable with each other.
        """
        from torchmetrics.image.fid import FrechetInceptionDistance

        scorer = self

        class _ClipFeatures(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.num_features = int(scorer._clip[0].config.projection_dim)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return scorer.image_features(x)

        fid = FrechetInceptionDistance(feature=_ClipFeatures(), normalize=False)
        fid.update(images_to_uint8(references), real=True)
        fid.update(images_to_uint8(images), real=False)
        return float(fid.compute())
