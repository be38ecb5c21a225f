"""Measurements on recorded tensors and images: FFT bands (:mod:`.fft`, :mod:`.bands`), attention mass by
token class (:mod:`.mass`), masks and F1 (:mod:`.masks`), source/target alignment (:mod:`.alignment`) and
image metrics (:mod:`.metrics`). No hooks and no pipeline calls, except where a function says it generates."""
