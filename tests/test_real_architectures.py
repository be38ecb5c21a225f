"""The real families at their published sizes (issue 23): the configs of data/configs and random-weight builds.

The config tests read JSON only (no torch): each file parses and carries the fields that set the sizes.
The slow test builds Stable Diffusion 1.5 at its real configuration with random weights.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "data" / "configs"
FAMILIES = ("sd15", "sd21", "sdxl", "pixart")
COMPONENTS = {
    "sd15": {"model_index", "unet", "vae", "text_encoder", "scheduler"},
    "sd21": {"model_index", "unet", "vae", "text_encoder", "scheduler"},
    "sdxl": {"model_index", "unet", "vae", "text_encoder", "text_encoder_2", "scheduler"},
    "pixart": {"model_index", "transformer", "vae", "text_encoder", "scheduler"},
}
PROMPT_A, PROMPT_B = "a red striped circle on the left", "a blue star"


def config(family: str, name: str) -> dict:
    return json.loads((CONFIGS / family / f"{name}.json").read_text())


def _families_in(path: Path) -> tuple:
    """The literal ``FAMILIES = (...)`` of a module, read without importing it (no torch)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAMILIES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no FAMILIES in {path}")


# ---------------------------------------------------------------- torch-free: the configs


def test_every_family_has_exactly_its_components_and_every_file_parses():
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == sorted(FAMILIES)
    for family, names in COMPONENTS.items():
        files = {p.stem for p in (CONFIGS / family).glob("*.json")}
        assert files == names, f"{family}: {sorted(files)}"
        for name in names:
            assert isinstance(config(family, name), dict)


def test_the_module_and_the_script_name_the_same_families():
    assert _families_in(ROOT / "helpers" / "bench" / "real_architectures.py") == FAMILIES
    assert _families_in(ROOT / "scripts" / "dry_run_real_architectures.py") == FAMILIES


def test_model_index_names_every_built_component():
    for family, names in COMPONENTS.items():
        index = config(family, "model_index")
        for name in names - {"model_index"}:
            assert name in index, f"{family}/model_index.json lacks {name}"
        assert index["_t2i_source"].startswith(("stable-diffusion-v1-5/", "stabilityai/", "PixArt-alpha/"))


def test_sd15_sizes():
    unet, text, vae = config("sd15", "unet"), config("sd15", "text_encoder"), config("sd15", "vae")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["cross_attention_dim"] == 768 == text["hidden_size"]
    assert unet["attention_head_dim"] == 8 and unet["layers_per_block"] == 2 and unet["sample_size"] == 64
    assert unet["down_block_types"].count("CrossAttnDownBlock2D") == 3
    assert text["architectures"] == ["CLIPTextModel"] and text["hidden_act"] == "quick_gelu"
    assert (text["num_hidden_layers"], text["num_attention_heads"], text["intermediate_size"]) == (12, 12, 3072)
    assert (text["vocab_size"], text["max_position_embeddings"]) == (49408, 77)
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
    assert vae["scaling_factor"] == 0.18215


def test_sd21_sizes():
    unet, text = config("sd21", "unet"), config("sd21", "text_encoder")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["cross_attention_dim"] == 1024 == text["hidden_size"]
    assert unet["attention_head_dim"] == [5, 10, 20, 20] and unet["use_linear_projection"] is True
    assert (text["num_hidden_layers"], text["num_attention_heads"], text["intermediate_size"]) == (23, 16, 4096)
    assert text["hidden_act"] == "gelu" and text["vocab_size"] == 49408
    assert config("sd21", "scheduler")["prediction_type"] == "epsilon"  # the 512 px base model


def test_sdxl_sizes():
    unet = config("sdxl", "unet")
    one, two = config("sdxl", "text_encoder"), config("sdxl", "text_encoder_2")
    assert unet["block_out_channels"] == [320, 640, 1280]
    assert unet["cross_attention_dim"] == 2048 == one["hidden_size"] + two["hidden_size"]
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert unet["addition_embed_type"] == "text_time" and unet["addition_time_embed_dim"] == 256
    assert unet["projection_class_embeddings_input_dim"] == 2816 == 6 * 256 + two["projection_dim"]
    assert unet["sample_size"] == 128 and unet["use_linear_projection"] is True
    assert one["architectures"] == ["CLIPTextModel"] and one["hidden_size"] == 768
    assert two["architectures"] == ["CLIPTextModelWithProjection"]
    assert (two["num_hidden_layers"], two["num_attention_heads"], two["intermediate_size"]) == (32, 20, 5120)
    vae = config("sdxl", "vae")
    assert vae["scaling_factor"] == 0.13025 and vae["force_upcast"] is True


def test_pixart_sizes():
    dit, t5 = config("pixart", "transformer"), config("pixart", "text_encoder")
    assert dit["_class_name"] == "PixArtTransformer2DModel" and dit["num_layers"] == 28
    assert dit["num_attention_heads"] * dit["attention_head_dim"] == 1152 == dit["cross_attention_dim"]
    assert dit["caption_channels"] == 4096 == t5["d_model"]
    assert (dit["sample_size"], dit["patch_size"], dit["in_channels"], dit["out_channels"]) == (64, 2, 4, 8)
    assert t5["architectures"] == ["T5EncoderModel"] and t5["feed_forward_proj"] == "gated-gelu"
    assert (t5["num_layers"], t5["d_ff"], t5["num_heads"], t5["d_kv"]) == (24, 10240, 64, 64)
    assert (t5["vocab_size"], t5["pad_token_id"], t5["eos_token_id"]) == (32128, 0, 1)


def test_schedulers_are_the_published_ones():
    classes = {f: config(f, "scheduler")["_class_name"] for f in FAMILIES}
    assert classes == {"sd15": "PNDMScheduler", "sd21": "PNDMScheduler", "sdxl": "EulerDiscreteScheduler",
                       "pixart": "DPMSolverMultistepScheduler"}
    for family in FAMILIES:
        s = config(family, "scheduler")
        assert s["num_train_timesteps"] == 1000 and s["prediction_type"] == "epsilon"
        linear = family == "pixart"
        assert (s["beta_schedule"], s["beta_start"], s["beta_end"]) == (
            ("linear", 0.0001, 0.02) if linear else ("scaled_linear", 0.00085, 0.012))


@pytest.mark.parametrize("argv, words", [
    (["--families", "sd99"], "unknown family"),
    (["--steps", "0"], "--steps"),
    (["--height", "256"], "together"),
    (["--height", "256", "--width", "512"], "together"),
    (["--height", "250", "--width", "250"], "multiples of 64"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--t5-layers", "25"], "--t5-layers"),
])
def test_the_script_refuses_bad_input_in_one_sentence(argv, words, capsys):
    from conftest import load_script

    with pytest.raises(SystemExit) as exit_info:
        load_script("dry_run_real_architectures").parse_args(argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_the_script_accepts_a_reduced_square_resolution():
    from conftest import load_script

    args = load_script("dry_run_real_architectures").parse_args(
        ["--families", "sd15", "sd15", "--height", "256", "--width", "256"])
    assert args.families == ["sd15"] and (args.height, args.width) == (256, 256) and args.t5_layers == 4


# ---------------------------------------------------------------- with torch


def test_build_refuses_unknown_families_and_misplaced_t5_layers():
    from helpers.bench.real_architectures import build, check_size

    with pytest.raises(ValueError, match="unknown family"):
        build("sd99")
    with pytest.raises(ValueError, match="pixart only"):
        build("sd15", t5_layers=4)
    with pytest.raises(ValueError, match="together and equal"):
        check_size(256, None)
    with pytest.raises(ValueError, match="multiple of 64"):
        check_size(250, 250)
    assert check_size(None, None) is None and check_size(256, 256) == 256


@pytest.fixture(scope="module")
def sd15_real():
    """Stable Diffusion 1.5 at its published size, random weights, float32 on the CPU (about 4.3 GB)."""
    from helpers.bench.real_architectures import build

    return build("sd15")


@pytest.mark.slow
def test_sd15_at_real_size_records_attention_at_every_resolution_and_switches_eos(sd15_real):
    """SD 1.5 with its real channel widths, one step, at a REDUCED resolution: 256x256 px (32x32 latents).

    Reduced because the suite runs on 2 CPU cores and must stay under 10 minutes: the native 512 px
    (64x64 latents) costs about four times as much per UNet call and per VAE decode. The widths,
    depths, head counts and text encoder are the real ones; only the latent grid is smaller, so the
    cross-attention maps come at 32, 16, 8 and 4 instead of 64, 32, 16 and 8.
    """
    import torch

    from helpers.bench.real_architectures import latent_size, parameter_counts
    from helpers.generation import generate
    from helpers.hooks.attention import record_attention
    from helpers.text.conditioning import encode
    from helpers.text.surgery import generate_from_embeddings, switch_eos

    pipe = sd15_real
    counts = parameter_counts(pipe)  # the published model: 859.5M UNet, 123.1M CLIP ViT-L/14 text, 83.7M VAE
    assert 855e6 < counts["unet"] < 865e6
    assert 122e6 < counts["text_encoder"] < 124e6
    assert 83e6 < counts["vae"] < 84.5e6
    assert list(pipe.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    with latent_size(pipe, 32):
        with record_attention(pipe, resolutions=None) as rec:
            images = generate(pipe, [PROMPT_A], num_inference_steps=1, progress=False)
        assert images.shape == (1, 256, 256, 3)
        assert rec.sizes == [(32, 32), (16, 16), (8, 8), (4, 4)]
        for side in (32, 16, 8, 4):
            maps = rec.maps(side)
            assert tuple(maps.shape) == (1, 1, 77, side, side)
            assert torch.isfinite(maps).all()
        assert torch.allclose(rec.token_mass().sum(-1), torch.ones(1, 1), atol=1e-3)

        a, b = encode(pipe, PROMPT_A), encode(pipe, PROMPT_B)
        switched = switch_eos(a, b)
        assert tuple(switched.embeds.shape) == (77, 768)
        assert torch.equal(switched.embeds[list(a.semantic)], a.embeds[list(a.semantic)])
        assert torch.equal(switched.embeds[a.eos_class[0]], b.embeds[b.eos_class[0]])  # B's [EOS] on A's
        images = generate_from_embeddings(pipe, [switched], num_inference_steps=1)
        assert images.shape == (1, 256, 256, 3) and bool((images >= 0).all() and (images <= 1).all())
    assert pipe.unet.config.sample_size == 64  # the native size is back


@pytest.mark.slow
def test_run_paths_on_sd15_at_real_size_reports_every_path_ok(sd15_real):
    """Every helper path of ``run_paths`` on the real SD 1.5, two steps at 256x256 px (reduced, as above).

    Two steps so that the guidance schedule TextWindow(k=1) really drops the text at the second step.
    """
    import json

    from conftest import load_script
    from helpers.bench.real_architectures import PATHS, run_paths

    result = run_paths(sd15_real, steps=2, height=256, width=256)
    failed = {k: e.get("error") for k, e in result["paths"].items() if e["status"] != "OK"}
    assert not failed, f"paths failed on the real SD 1.5 architecture: {failed}"
    assert list(result["paths"]) == list(PATHS)
    assert (result["latent_size"], result["image_size"], result["native_size"]) == (32, 256, False)
    paths = result["paths"]
    assert paths["attention"]["sizes"] == [[32, 32], [16, 16], [8, 8], [4, 4]]
    for name in ("plain", "attention", "surgery", "kv", "guidance", "trajectory"):
        assert paths[name]["denoiser_calls"] == 2 and paths[name]["seconds_per_step"] > 0, name
        assert paths[name]["peak_memory_bytes"] > 4e9, name  # the fp32 weights alone take 4.3 GB
    assert paths["guidance"]["evals_per_image"] == 3  # N + k = 2 + 1: the second step runs without the text
    assert paths["trajectory"]["xt_shape"] == [3, 1, 4, 32, 32] and paths["trajectory"]["x0_shape"] == [2, 1, 4, 32, 32]
    assert paths["fft"]["denoiser_calls"] == 0 and paths["fft"]["seconds_per_step"] is None
    assert "t5_extrapolation" not in result
    json.dumps(load_script("dry_run_real_architectures")._jsonable(result), allow_nan=False)  # the script can write it
    assert sd15_real.unet.config.sample_size == 64


def test_run_paths_runs_only_the_chosen_paths_and_refuses_unknown_ones(pipes):
    """``paths=`` selects (the trace facade on a random-tiny SD); an unknown path is one sentence."""
    from helpers.bench.real_architectures import run_paths

    result = run_paths(pipes("sd15"), steps=2, paths=["trace"])
    assert list(result["paths"]) == ["trace"]
    entry = result["paths"]["trace"]
    assert entry["status"] == "OK", entry.get("error")
    assert entry["steps_recorded"] == 2 and entry["word_map_finite"] and entry["denoiser_calls"] == 2
    assert entry["class_mass_last_step"] and all(v >= 0 for v in entry["class_mass_last_step"].values())
    with pytest.raises(ValueError, match="unknown helper path 'daam'"):
        run_paths(pipes("sd15"), steps=2, paths=["daam"])


def test_the_script_refuses_an_unknown_path(capsys):
    from conftest import load_script

    with pytest.raises(SystemExit):
        load_script("dry_run_real_architectures").parse_args(["--paths", "daam"])
    assert "unknown helper path" in capsys.readouterr().err
