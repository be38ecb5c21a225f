"""Helpers for reproducing "Towards Understanding the Working Mechanism of Text-to-Image
Diffusion Model" (Yi et al., NeurIPS 2024) on the embedded tiny model or real Stable Diffusion.

Modules (one concept each): ``loading``, ``tokens``, ``attention``, ``trajectory``, ``fft``,
``surgery``, ``kv_substitution``, ``guidance``, ``metrics``, ``plotting``, ``toyworld``,
``evaluator``, ``notebook``. See CONTRIBUTING.md.
"""

import logging as _logging


class _QuietTorchvisionNotice(_logging.Filter):
    """transformers announces at import that image processors fall back to PIL without
    torchvision; we use PIL on purpose (CPU-only install), so drop that one notice."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


for _name in ("transformers.utils.import_utils",):
    _logging.getLogger(_name).addFilter(_QuietTorchvisionNotice())

from .loading import load_pipeline  # noqa: E402

__all__ = ["load_pipeline"]
