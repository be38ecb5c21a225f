"""Token bookkeeping: which positions of an encoded prompt are [SOS], semantic, [EOS], padding.

The classes are read from the tokenizer's own ids, so they are right for every
tokenizer we support:

* SD 1.x (CLIP): ``[SOS] w1 .. wn [EOS] [EOS] ...`` -- padding is copies of [EOS];
* SD 2.x and SDXL's second tokenizer (OpenCLIP): padding is ``!`` (id 0), not [EOS];
* PixArt-alpha (T5): no [SOS]; ``w1 .. wn </s> <pad> <pad> ...``.

In the paper's language the "[EOS] class" is the real [EOS] plus all padding
positions (:attr:`TokenClasses.eos_class`).
"""

from __future__ import annotations

import dataclasses

CLASS_NAMES = ("sos", "semantic", "eos", "padding")


class PromptTooLongError(ValueError):
    """The prompt has more tokens than the text encoder accepts."""


class PromptTypeError(TypeError):
    """Prompts must be a string or a list of strings."""


@dataclasses.dataclass(frozen=True)
class TokenClasses:
    """Positions of each token class in one padded prompt of length ``max_length``."""

    prompt: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    sos: tuple[int, ...]
    semantic: tuple[int, ...]
    eos: tuple[int, ...]
    padding: tuple[int, ...]
    padding_is_eos: bool
    has_sos: bool

    @property
    def eos_class(self) -> tuple[int, ...]:
        """The paper's [EOS] class: the real [EOS] and every padding position after it."""
        return self.eos + self.padding

    @property
    def max_length(self) -> int:
        return len(self.ids)

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Class name -> positions, for the four classes of :data:`CLASS_NAMES`."""
        return {name: getattr(self, name) for name in CLASS_NAMES}

    def words(self) -> list[tuple[str, tuple[int, ...]]]:
        """The prompt's words with the semantic positions of their pieces, in order."""
        sentencepiece = any(self.tokens[p].startswith("▁") for p in self.semantic)
        groups: list[list[int]] = []
        current: list[int] = []
        for pos in self.semantic:
            token = self.tokens[pos]
            starts_word = token.startswith("▁") or not _clean(token).isalnum()  # punctuation stands alone
            if sentencepiece and starts_word and current:
                groups.append(current)
                current = []
            current.append(pos)
            if not sentencepiece and token.endswith("</w>"):
                groups.append(current)
                current = []
        if current:
            groups.append(current)
        return [("".join(_clean(self.tokens[p]) for p in g), tuple(g)) for g in groups]

    def positions_of(self, word: str) -> tuple[int, ...]:
        """Semantic positions of the first occurrence of ``word`` (all pieces of a split word).

        Raises:
            ValueError: when the word is not in the prompt.
        """
        for text, positions in self.words():
            if text == word.lower():
                return positions
        raise ValueError(f"word {word!r} is not a token of prompt {self.prompt!r}")


def _clean(token: str) -> str:
    return token.replace("</w>", "").replace("▁", "").lower()


def token_classes(tokenizer, prompt: str, max_length: int | None = None) -> TokenClasses:
    """Classify every position of ``prompt`` padded to ``max_length`` (default: the tokenizer's).

    Raises:
        PromptTooLongError: when the prompt needs more than ``max_length`` tokens.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, not {type(prompt).__name__}")
    max_length = int(max_length or tokenizer.model_max_length)
    full = tokenizer(prompt, add_special_tokens=True, truncation=False).input_ids
    if len(full) > max_length:
        raise PromptTooLongError(
            f"prompt has {len(full)} tokens but the text encoder takes at most {max_length} "
            f"(special tokens included): shorten it. Prompt: {prompt[:60]!r}..."
        )
    ids = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=True).input_ids
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    n = len(full)
    has_sos = bos is not None and n > 0 and ids[0] == bos
    sos = (0,) if has_sos else ()
    if ids[n - 1] != eos:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} did not end the prompt with [EOS]; unsupported")
    return TokenClasses(
        prompt=prompt,
        ids=tuple(ids),
        tokens=tuple(tokenizer.convert_ids_to_tokens(ids)),
        sos=sos,
        semantic=tuple(range(len(sos), n - 1)),
        eos=(n - 1,),
        padding=tuple(range(n, max_length)),
        padding_is_eos=pad == eos,
        has_sos=has_sos,
    )


def text_max_length(pipe) -> int:
    """Sequence length the pipeline encodes prompts to (77 for CLIP, 120 for PixArt's T5)."""
    from ..loading import family

    if family(pipe) == "pixart":
        return 120
    return int(pipe.tokenizer.model_max_length)


def pipeline_token_classes(pipe, prompt: str, which: int = 1) -> TokenClasses:
    """:func:`token_classes` with the pipeline's tokenizer (``which=2``: SDXL's second one)."""
    tokenizer = getattr(pipe, "tokenizer_2", None) if which == 2 else getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(pipe).__name__} has no tokenizer number {which}")
    return token_classes(tokenizer, prompt, max_length=text_max_length(pipe))


def check_prompts(pipe, prompts) -> list[str]:
    """``prompts`` as a list of strings, checked against every tokenizer of the pipeline.

    The one check behind every entry point that takes prompt text (``generate``, ``guidance.sample``,
    ``text.conditioning.encode``, the recorders through them): a prompt is never silently truncated.

    Raises:
        PromptTypeError: ``prompts`` is not a string or a non-empty list of strings.
        PromptTooLongError: a prompt needs more tokens than a text encoder takes (77 for CLIP).
    """
    items = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) for p in items):
        kind = type(prompts).__name__ if not isinstance(prompts, (list, tuple)) else (
            "an empty list" if not prompts else f"a list holding {type(next(p for p in prompts if not isinstance(p, str))).__name__}")
        raise PromptTypeError(f"prompts must be a string or a non-empty list of strings, got {kind}")
    from ..loading import family

    fam = family(pipe)
    for which in (1, 2) if getattr(pipe, "tokenizer_2", None) is not None else (1,):
        for prompt in items:
            if fam == "pixart":
                prompt = pipe._text_preprocessing(prompt, clean_caption=False)[0]
            pipeline_token_classes(pipe, prompt, which=which)  # raises PromptTooLongError
    return list(items)
