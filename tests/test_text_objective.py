"""The text tower's training objectives (scripts/train_tiny_model.py, issue "Embedded model v4")."""

import numpy as np
import pytest
import torch

from conftest import load_script
from helpers.toy import model as tm
from helpers.toy import world as toyworld


@pytest.fixture(scope="module")
def parts():
    module = load_script("train_tiny_model")
    tokenizer = tm.build_tokenizer(toyworld.vocabulary(filler=True))
    rng = np.random.default_rng(0)
    scenes = toyworld.dataset(6, seed=0)
    captions = [toyworld.caption(s, rng) for s in scenes[:3]] + [toyworld.lengthen(toyworld.caption(s, rng), rng) for s in scenes[3:]]
    captions[-1] = toyworld.lengthen(toyworld.caption(scenes[-1], rng), np.random.default_rng(1), max_words=75)
    # make sure one caption's real [EOS] lands at the last position (76)
    captions[-2] = captions[-2].split()[0] + " " + " ".join(["simple"] * 74)
    ids = module.tokenize(tokenizer, captions)
    pixels = torch.randn(len(captions), 3, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return module, tokenizer, captions, ids, pixels


def hidden_grad(module, objective, tokenizer, captions, ids, pixels):
    torch.manual_seed(0)
    model = tm.clip_model(tokenizer)
    heads = module.text_heads(objective, len(tokenizer))
    hidden = {}

    def keep(module_, args, out):
        out.retain_grad()
        hidden["h"] = out

    handle = model.text_model.final_layer_norm.register_forward_hook(keep)
    try:
        contrastive, aux = module.clip_losses(model, heads, ids, pixels, captions, tokenizer.eos_token_id)
        (contrastive if aux is None else contrastive + aux).backward()
    finally:
        handle.remove()
    return model, hidden["h"].grad


def test_lengthened_captions_name_the_same_attributes_and_fit_77_tokens(parts):
    module, tokenizer, captions, ids, _ = parts
    rng = np.random.default_rng(3)
    for scene in toyworld.dataset(50, seed=3):
        text = toyworld.caption(scene, rng)
        long = toyworld.lengthen(text, rng)
        assert toyworld.named_attributes(long) == toyworld.named_attributes(text)
        n = len(tokenizer(long).input_ids)
        assert len(tokenizer(text).input_ids) < n <= tm.MAX_LENGTH
    eos = (ids == tokenizer.eos_token_id).int().argmax(1)
    assert eos.max() == tm.MAX_LENGTH - 1 and eos.min() < 20


def test_clip_objective_gives_no_gradient_but_at_the_pooled_real_eos(parts):
    module, tokenizer, captions, ids, pixels = parts
    _, grad = hidden_grad(module, "clip", tokenizer, captions, ids, pixels)
    eos = (ids == tokenizer.eos_token_id).int().argmax(1)
    pooled = torch.zeros(ids.shape, dtype=torch.bool)
    pooled[torch.arange(len(ids)), eos] = True
    assert torch.all(grad[~pooled] == 0)
    assert torch.all(grad[pooled].abs().sum(-1) > 0)


def test_the_controls_put_a_loss_elsewhere(parts):
    """identity: words get a gradient, padding none; eos_head: the padding gets one too."""
    module, tokenizer, captions, ids, pixels = parts
    padding = ~module.non_padding(ids, tokenizer.eos_token_id)
    _, grad = hidden_grad(module, "identity", tokenizer, captions, ids, pixels)
    assert torch.all(grad[padding] == 0) and torch.all(grad[~padding].abs().sum(-1) > 0)
    _, grad = hidden_grad(module, "eos_head", tokenizer, captions, ids, pixels)
    assert torch.all(grad[padding].abs().sum(-1) > 0)


def test_late_position_embeddings_are_trained_through_caption_lengths(parts):
    module, tokenizer, captions, ids, pixels = parts
    model, _ = hidden_grad(module, "clip", tokenizer, captions, ids, pixels)
    table = model.text_model.embeddings.position_embedding.weight
    before = table.detach().clone()
    torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0).step()
    moved = (table.detach() - before).abs().sum(-1)
    assert torch.all(moved[40:77] > 0)
    # short captions alone leave them untouched: the gradient there is exactly zero
    model, _ = hidden_grad(module, "clip", tokenizer, captions[:3], ids[:3], pixels[:3])
    last = int((ids[:3] == tokenizer.eos_token_id).int().argmax(1).max())
    assert torch.all(model.text_model.embeddings.position_embedding.weight.grad[last + 1:] == 0)


def test_objective_is_a_word_setting(parts):
    module = parts[0]
    cfg = module.apply_overrides(module.PROFILES["smoke"], ["clip_objective=identity"])
    assert cfg["clip_objective"] == "identity" and module.PROFILES["full"]["clip_objective"] == "clip"
    with pytest.raises(SystemExit, match="clip_objective must be one of"):
        module.apply_overrides(module.PROFILES["smoke"], ["clip_objective=contrastive"])


def test_hard_negative_groups_differ_in_one_attribute_only():
    from helpers.toy import world

    t = load_script("train_tiny_model")
    scenes = world.dataset(3000, seed=0)
    index = t.attribute_index(scenes)
    idx, captions, group = t.clip_batch(scenes, index, np.random.default_rng(1), 64, 0.5, filler=0.0)
    n_hard = int((group >= 0).sum())  # the last group may run past half the batch
    assert len(idx) == len(captions) == len(group) == 64 and 32 <= n_hard < 32 + t.HARD_NEGATIVE_GROUP
    assert (group[:n_hard] >= 0).all() and (group[n_hard:] == -1).all()
    for k in set(group[:n_hard]):
        g = idx[group == k]
        assert len(g) >= 2
        attrs = [scenes[i].attributes() for i in g]
        differing = {k for k in attrs[0] if len({a[k] for a in attrs}) > 1}
        assert len(differing) == 1 and differing <= set(t.HARD_NEGATIVE_ATTRIBUTES)
        assert len({a[next(iter(differing))] for a in attrs}) == len(g)  # distinct values: true negatives
    for i, c in zip(idx, captions):
        assert world.named_attributes(c).items() <= scenes[i].attributes().items()
    # version 3 draws no groups
    assert t.VERSION_3["clip_hard_negatives"] == 0


def test_the_conv_stem_round_trips_and_keeps_the_token_grid(tmp_path):
    """A CLIP pair with the conv stem: same 8x8 grid (65 vision tokens), saved and rebuilt exactly."""
    tokenizer = tm.build_tokenizer()
    torch.manual_seed(0)
    model = tm.clip_model(tokenizer, conv_stem=(8, 16)).eval()
    assert isinstance(model.vision_model.embeddings.patch_embedding, tm.ConvStem)
    pixels = torch.randn(2, 3, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE)
    ids = tokenizer(["a red circle", "a blue star"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, output_hidden_states=True)
    assert out.vision_model_output.last_hidden_state.shape[1] == 65
    model.save_pretrained(tmp_path / "clip")
    again = tm.load_clip(tmp_path / "clip").eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, pixel_values=pixels).logits_per_image, out.logits_per_image)
    plain = tm.clip_model(tokenizer)
    plain.save_pretrained(tmp_path / "plain")
    assert isinstance(tm.load_clip(tmp_path / "plain").vision_model.embeddings.patch_embedding, torch.nn.Conv2d)
    with pytest.raises(ValueError, match="stride-2 layers"):
        tm.clip_model(tokenizer, conv_stem=(8,))


def test_version_3_keeps_the_patch_projection_and_v4_uses_the_stem():
    module = load_script("train_tiny_model")
    assert module.VERSION_3["clip_image_stem"] == "patch" and module.IMAGE_STEMS["patch"] is None
    assert module.PROFILES["full"]["clip_image_stem"] == "conv" and module.IMAGE_STEMS["conv"] == (32, 64)
