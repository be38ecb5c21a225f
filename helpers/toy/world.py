"""The synthetic captioned-shapes world the embedded default model is trained on.

Every image is drawn procedurally from a :class:`Scene` (no dataset files): a plain
background colour and one object with a shape, a colour, a size, a position and a
surface pattern. Because the renderer knows every attribute and the object's exact
region, notebooks can measure alignment and attention localisation against ground
truth instead of against a proxy.

Example:
    >>> rng = np.random.default_rng(0)
    >>> scene = sample_scene(rng)
    >>> image, mask = render(scene)
    >>> caption(scene, rng)
    'a photo of a large red striped circle on the left'
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

IMAGE_SIZE = 64

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 0),
    "yellow": (240, 220, 20),
    "green": (30, 165, 50),
    "cyan": (0, 200, 215),
    "blue": (35, 70, 225),
    "purple": (135, 40, 195),
    "pink": (250, 115, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (125, 125, 125),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted")

#: Attribute name -> its possible values, in label order (used by the evaluator).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
    "position": POSITIONS,
    "pattern": PATTERNS,
    "background": tuple(BACKGROUNDS),
}

#: Shape x colour pairs never shown to the generator (or its CLIP / VAE) in training:
#: 6 of 48 pairs (12.5%), one per shape and one per colour, so that generalisation to
#: unseen attribute combinations can be measured.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "purple"),
        ("square", "orange"),
        ("triangle", "cyan"),
        ("star", "pink"),
        ("heart", "green"),
        ("cross", "yellow"),
    }
)

_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_POSITION_OFFSETS = {"left": (-17, 0), "right": (17, 0), "top": (0, -17), "bottom": (0, 17), "center": (0, 0)}
_SIZE_RADII = {"small": 9.0, "large": 15.0}
_SHADE = 0.5  # pattern marks are the object colour darkened by this factor

#: Caption templates. ``{pos}`` is a phrase such as "on the left", ``{pattern}`` is
#: empty for plain objects in the short templates.
FULL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {color} {pattern} {shape} {pos}",
    "there is a {size} {color} {pattern} {shape} {pos} on a {background} background",
    "a {size} {pattern} {color} {shape} {pos} on a {background} background",
    "an image of a {size} {color} {pattern} {shape} {pos}",
    "a picture showing one {size} {color} {shape} with a {pattern} surface {pos}",
)
SHORT_TEMPLATES: tuple[str, ...] = (
    "a {color} {shape}",
    "a {size} {color} {shape}",
    "a {color} {shape} {pos}",
    "a {pattern} {color} {shape}",
    "a photo of a {shape}",
    "a {color} {pattern} {shape} on a {background} background",
)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Ground truth of one image: the attributes and small geometric jitter."""

    shape: str
    color: str
    size: str
    position: str
    pattern: str
    background: str
    dx: float = 0.0
    dy: float = 0.0
    dr: float = 0.0
    phase: float = 0.0

    def attributes(self) -> dict[str, str]:
        """The named attributes (no jitter), as a plain dict."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def labels(self) -> dict[str, int]:
        """Attribute name -> class index in :data:`ATTRIBUTES` order."""
        return {name: ATTRIBUTES[name].index(getattr(self, name)) for name in ATTRIBUTES}


def sample_scene(
    rng: np.random.Generator,
    held_out: str = "exclude",
    **fixed: str,
) -> Scene:
    """Draw a random scene.

    Args:
        rng: numpy random generator (the only source of randomness).
        held_out: ``"exclude"`` never returns a held-out shape x colour pair
            (training data), ``"only"`` returns only held-out pairs, ``"any"`` both.
        **fixed: attributes to pin, e.g. ``shape="star"``.
    """
    if held_out not in ("exclude", "only", "any"):
        raise ValueError(f"held_out must be 'exclude', 'only' or 'any', not {held_out!r}")
    for name, value in fixed.items():
        if name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
            raise ValueError(f"unknown attribute {name}={value!r}; choose from {ATTRIBUTES.get(name)}")
    for _ in range(1000):
        attrs = {name: fixed.get(name) or values[rng.integers(len(values))] for name, values in ATTRIBUTES.items()}
        pair_held = (attrs["shape"], attrs["color"]) in HELD_OUT_PAIRS
        if (held_out == "exclude" and pair_held) or (held_out == "only" and not pair_held):
            continue
        jitter = rng.uniform(-1.0, 1.0, size=4)
        return Scene(**attrs, dx=2.0 * jitter[0], dy=2.0 * jitter[1], dr=1.0 * jitter[2], phase=float(jitter[3]))
    raise ValueError(f"no scene satisfies held_out={held_out!r} with {fixed}")


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (u right, v down, radius 1)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":
        return (v <= 0.75) & (v >= -0.95 + 1.8 * np.abs(u))
    if shape == "star":
        theta = np.arctan2(u, -v)
        sector = 2 * np.pi / 5
        t = np.abs(((theta + sector / 2) % sector) - sector / 2) / (sector / 2)  # 0 at a tip, 1 between tips
        return np.hypot(u, v) <= 1.05 - (1.05 - 0.45) * t
    if shape == "heart":
        x, y = 1.2 * u, -1.2 * v + 0.15
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.33) & (b <= 0.95)) | ((b <= 0.33) & (a <= 0.95))
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _pattern_mask(pattern: str, x: np.ndarray, y: np.ndarray, phase: float) -> np.ndarray:
    """Where the darker pattern marks are (pixel coordinates)."""
    if pattern == "plain":
        return np.zeros_like(x, dtype=bool)
    if pattern == "striped":
        # diagonal stripes, 7 px apart across the stripe: coarse enough for a 4x-downsampling VAE
        return ((x + y + 10.0 * phase) % 10.0) < 5.0
    if pattern == "dotted":
        # dots on an 8 px grid (two latent pixels of the 16x16 latent per period)
        gx = (x + 8.0 * phase) % 8.0 - 4.0
        gy = (y + 8.0 * phase) % 8.0 - 4.0
        return gx * gx + gy * gy <= 2.2**2
    raise ValueError(f"unknown pattern {pattern!r}; choose from {PATTERNS}")


def object_geometry(scene: Scene, size: int = IMAGE_SIZE) -> tuple[float, float, float]:
    """Centre x, centre y and radius of the object in pixels."""
    scale = size / IMAGE_SIZE
    ox, oy = _POSITION_OFFSETS[scene.position]
    cx = (size / 2 + (ox + scene.dx) * scale)
    cy = (size / 2 + (oy + scene.dy) * scale)
    return cx, cy, (_SIZE_RADII[scene.size] + scene.dr) * scale


def render(scene: Scene, size: int = IMAGE_SIZE, supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene.

    Returns:
        ``(image, mask)``: ``image`` is ``(size, size, 3)`` uint8 RGB, ``mask`` is the
        ``(size, size)`` float32 coverage of the object in [0, 1] (anti-aliased).
    """
    n = size * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / supersample
    x, y = np.meshgrid(coords, coords)
    cx, cy, radius = object_geometry(scene, size)
    inside = _shape_mask(scene.shape, (x - cx) / radius, (y - cy) / radius)
    marks = _pattern_mask(scene.pattern, x * IMAGE_SIZE / size, y * IMAGE_SIZE / size, scene.phase) & inside
    color = np.asarray(COLORS[scene.color], dtype=np.float32)
    background = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    hi = np.empty((n, n, 3), dtype=np.float32)
    hi[:] = background
    hi[inside] = color
    hi[marks] = color * _SHADE
    image = hi.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    mask = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask.astype(np.float32)


def render_batch(scenes: Sequence[Scene], size: int = IMAGE_SIZE) -> np.ndarray:
    """Render many scenes to a ``(n, size, size, 3)`` uint8 array."""
    return np.stack([render(scene, size)[0] for scene in scenes])


def caption(scene: Scene, rng: np.random.Generator | None = None, template: str | None = None) -> str:
    """A caption for ``scene``.

    With ``template=None`` and an ``rng``, a random template is chosen (70% full,
    30% short); with neither, the first full template is used (all attributes named).
    """
    if template is None:
        if rng is None:
            template = FULL_TEMPLATES[0]
        elif rng.random() < 0.7:
            template = FULL_TEMPLATES[rng.integers(len(FULL_TEMPLATES))]
        else:
            template = SHORT_TEMPLATES[rng.integers(len(SHORT_TEMPLATES))]
    pattern = scene.pattern
    if pattern == "plain" and "surface" not in template and "{pattern}" in template and template in SHORT_TEMPLATES:
        pattern = ""
    text = template.format(
        size=scene.size,
        color=scene.color,
        pattern=pattern,
        shape=scene.shape,
        pos=_POSITION_PHRASES[scene.position],
        background=scene.background,
    )
    return " ".join(text.split())


def named_attributes(text: str) -> dict[str, str]:
    """Attributes a caption names explicitly (by word lookup), e.g. ``{'color': 'red'}``."""
    words = text.lower().replace(",", " ").split()
    found: dict[str, str] = {}
    for name, values in ATTRIBUTES.items():
        if name == "background":
            for i, w in enumerate(words[:-1]):
                if w in values and words[i + 1] == "background":
                    found[name] = w
            continue
        for w in words:
            if w in values and not (name == "color" and w in BACKGROUNDS):
                found.setdefault(name, w)
    for pos, phrase in _POSITION_PHRASES.items():
        if phrase in " ".join(words):
            found["position"] = pos
    return found


#: Words that name no attribute (and form no position phrase): the training script appends a random
#: run of them to some captions, so that the real [EOS] lands anywhere up to position 76 and CLIP's
#: position embeddings are trained through caption lengths, as a large-scale CLIP's are.
FILLER_WORDS: tuple[str, ...] = (
    "simple", "clean", "neat", "drawing", "very", "nice", "tidy", "sharp", "quiet", "scene", "rendered",
    "carefully", "nothing", "else", "here", "flat", "digital", "art", "style", "it", "is", "so", "just",
    "calm", "clear", "image", "photo", "picture",
)


def lengthen(text: str, rng: np.random.Generator, max_words: int = 75) -> str:
    """``text`` followed by a random run of :data:`FILLER_WORDS`, at most ``max_words`` words in all.

    The number of filler words is uniform in ``[1, max_words - len(words)]`` (75 words + [SOS] + [EOS]
    = 77 tokens with the toy tokenizer's one token per word): the real [EOS] lands anywhere up to the
    last position. The filler names no attribute, so ``named_attributes`` is unchanged.
    """
    n = len(text.split())
    room = max_words - n
    if room < 1:
        return text
    k = int(rng.integers(1, room + 1))
    return text + " " + " ".join(FILLER_WORDS[i] for i in rng.integers(len(FILLER_WORDS), size=k))


def vocabulary(filler: bool = False) -> list[str]:
    """Every word the captions of this world can contain (plus a few common extras).

    ``filler=True`` adds :data:`FILLER_WORDS` (the tokenizer of model version 4 on; version 3's has none).
    """
    words: set[str] = set(FILLER_WORDS) if filler else set()
    for values in ATTRIBUTES.values():
        words.update(values)
    for template in FULL_TEMPLATES + SHORT_TEMPLATES:
        words.update(w for w in template.replace("{", " {").split() if not w.startswith("{"))
    for phrase in _POSITION_PHRASES.values():
        words.update(phrase.split())
    words.update(["and", "of", "in", "with", "two", "object", "shape", "colored", "big", "tiny"])
    return sorted(words)


def dataset(n: int, seed: int, held_out: str = "exclude") -> list[Scene]:
    """``n`` scenes from a fixed seed (deterministic)."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, held_out=held_out) for _ in range(n)]


def scenes_with(values: Iterable[tuple[str, str]], rng: np.random.Generator) -> Scene:
    """A random scene with the given ``(attribute, value)`` pairs pinned."""
    return sample_scene(rng, held_out="any", **dict(values))


def ground_truth_scenes(records, seed: int = 0) -> list:
    """One toy-world scene per prompt record with the attributes the prompt names pinned."""
    rng = np.random.default_rng(seed)
    scenes = []
    for record in records:
        named = {k: v for k, v in getattr(record, "attributes", {}).items() if k in ATTRIBUTES}
        scenes.append(sample_scene(rng, held_out="any", **named))
    return scenes
