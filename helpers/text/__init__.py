"""The text side: token classes (:mod:`.tokens`), the one conditioning type :class:`~.conditioning.EncodedPrompt`
(:mod:`.conditioning`) and embedding edits such as switched-[EOS] prompts (:mod:`.surgery`)."""
