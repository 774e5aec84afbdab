"""Compressed-tensors checkpoints made with llm-compressor (backends/compress): built on the tiny
synthetic model, loaded by the transformers engine on CPU, judged by a census that cannot be fooled;
and the vLLM arguments of the vllm_ct_* backends. Needs the `quantize` extra (llmcompressor) for the
tests that quantize; the argument tests run without it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from backends.compress import CheckpointBuild, Recipe, checkpoint_census
from backends.contract import ConfigError, EngineContext
from runners.evaldata import BbcTexts
from backends.vllm import args as A
from backends.vllm import engine as E
from runners.plan.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
HAVE_LLMC = importlib.util.find_spec("llmcompressor") is not None
needs_llmc = pytest.mark.skipif(not HAVE_LLMC, reason="llmcompressor not installed: pip install 'quantbench[quantize]'")
CT = ("ct_gptq_w4a16", "ct_awq_w4a16", "ct_fp8_dynamic")
# Small calibration: seconds on the tiny model.
FAST_CALIBRATION = {"calibration_samples": 4, "calibration_seq_len": 32}


def _yaml(kind: str, name: str) -> dict:
    return yaml.safe_load((CONF / kind / f"{name}.yaml").read_text())


def _run(backend: str, model: str = "tiny", weights: str = "synthetic", device: str = "cpu",
         checkpoints: dict | None = None) -> RunConfig:
    b = _yaml("backend", backend)
    if b["options"]["compress"]["method"] != "fp8_dynamic":
        b["options"]["compress"].update(FAST_CALIBRATION)
    m = _yaml("model", model)
    if checkpoints:
        m["checkpoints"] = checkpoints
    wl = {"kind": "generate", "batch_sizes": [1], "prompt_tokens": 8, "new_tokens": 4}
    return RunConfig.from_dict({"backend": b, "model": m, "workload": wl, "weights": weights, "device": device},
                               backend)


def _open(run: RunConfig):
    from runners.open.engine import make_engine

    engine = make_engine(run.backend, run.model, run.engine_view("cpu"))
    assert engine.check() is None
    engine.prepare()
    engine.load()
    return engine


def _original(engine, name: str):
    import torch
    from safetensors.torch import load_file

    folder = Path(engine.ctx.files.folder())
    tensors = {}
    for f in folder.glob("*.safetensors"):
        tensors.update(load_file(f))
    return tensors[f"{name}.weight"].to(torch.float32)


@needs_llmc
@pytest.mark.parametrize("backend, bits, fmt", [("ct_gptq_w4a16", (4.0, 5.0), "pack-quantized"),
                                                ("ct_awq_w4a16", (4.0, 5.0), "pack-quantized"),
                                                ("ct_fp8_dynamic", (8.0, 8.5), "float-quantized")])
def test_checkpoint_builds_loads_and_its_census_proves_quantization(backend, bits, fmt, tmp_path, monkeypatch):
    import torch

    # It asserts a fresh build (quantize_s, cache_hit False): a caller's warm QUANTBENCH_CACHE must not hide it.
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))

    from runners.open.verify import verdict

    run = _run(backend)
    engine = _open(run)
    folder = engine.checkpoint.folder
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
    census = engine.census()
    # 2 blocks x 7 projections quantized; lm_head left in full precision.
    assert (census.quantized_layers, census.linear_layers, census.unquantized) == (14, 15, ["lm_head"])
    assert bits[0] <= census.quantized_bits <= bits[1]
    assert verdict(run.backend.expect, census, backend) is None
    info = engine.describe()
    assert info["checkpoint_quantization"]["quant_method"] == "compressed-tensors"
    assert "quantize_s" in engine.artefact_stats() and engine.checkpoint.cache_hit is False
    # The loaded weights are the quantized ones: close to the original, never equal to it.
    name = "model.layers.0.self_attn.q_proj"
    loaded = dict(engine.model.named_modules())[name].weight.detach().float()
    original = _original(engine, name)
    assert not torch.equal(loaded, original)
    assert (loaded - original).norm() / original.norm() < 0.25
    # And it scores: a forward pass gives finite log-probs.
    assert torch.isfinite(torch.as_tensor(engine.score([1, 2, 3, 4, 5]).values)).all()
    # Built once: a second prepare is a cache hit.
    again = _open(run)
    assert again.checkpoint.folder == folder and again.checkpoint.cache_hit is True


@needs_llmc
def test_census_does_not_count_layers_whose_loaded_weights_left_the_grid():
    """A checkpoint's tensors alone prove nothing about what ran: swap the original weights back in
    and the census must say unquantized, so the row fails its expectation."""
    import torch

    from runners.open.verify import verdict

    run = _run("ct_gptq_w4a16")
    engine = _open(run)
    with torch.no_grad():
        for name, m in engine.model.named_modules():
            if isinstance(m, torch.nn.Linear) and name != "lm_head":
                m.weight.copy_(_original(engine, name))
    census = checkpoint_census(engine.model, engine.checkpoint.folder)
    assert census.quantized_layers == 0
    assert "off the grid" in " ".join(census.notes)
    assert "0 of 15" in verdict(run.backend.expect, census, "ct_gptq_w4a16")


def test_recipes_are_typed_and_checked():
    with pytest.raises(ConfigError, match="group_size"):
        Recipe(method="gptq", group_size=100)
    with pytest.raises(ConfigError, match="bits"):
        Recipe(method="fp8_dynamic", bits=4)
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"backend": {**_yaml("backend", "ct_gptq_w4a16"),
                                         "options": {"quantization": "compressed_tensors",
                                                     "compress": {"method": "gptq", "groupsize": 64}}},
                             "model": _yaml("model", "tiny"), "workload": {"kind": "generate", "batch_sizes": [1]},
                             "weights": "synthetic", "device": "cpu"}, "x")
    # The fp8 recipe does not depend on calibration settings (no calibration), the others do.
    assert "samples" not in Recipe(method="fp8_dynamic", bits=8).key()
    assert Recipe(method="gptq").key() != Recipe(method="gptq", calibration_samples=8).key()


# -- vLLM: the arguments the vllm_ct_* backends produce (CPU; no vllm needed) -----------------------
class _Files:
    def folder(self):
        return "/cache/converted/abc"

    def tokenizer_source(self):
        return None


def _ctx(run):
    return EngineContext(run=run.engine_view("cuda"), files=_Files(), texts=BbcTexts(), cache_dir=Path("/cache"))


@pytest.mark.parametrize("backend", ["vllm_ct_gptq_w4a16", "vllm_ct_awq_w4a16", "vllm_ct_fp8_dynamic"])
def test_vllm_ct_arguments_point_at_the_built_checkpoint(backend):
    run = _run(backend, model="smollm2-135m", weights="pretrained", device="cuda")
    E.VllmEngine.validate(run.backend.options, run.engine_view("cuda"))  # no model.checkpoints entry needed: the engine builds it
    opts = run.backend.options
    assert opts.quantization == "compressed-tensors" and opts.compress.method == backend[8:].replace("_w4a16", "")
    assert opts.compress.group_size == 64 or opts.compress.method == "fp8_dynamic"
    built = CheckpointBuild(Path("/cache/compressed/0123"))
    kw = A.llm_kwargs(opts, _ctx(run), A.model_source(opts, _ctx(run), built))
    assert kw["model"] == "/cache/compressed/0123" and kw["quantization"] == "compressed-tensors"
    assert "load_format" not in kw  # real weights, not dummy
    with pytest.raises(RuntimeError, match="prepare"):
        A.model_source(opts, _ctx(run))
    # A checkpoint carried from the machine that built it wins over building one.
    carried = _run(backend, model="smollm2-135m", weights="pretrained", device="cuda",
                   checkpoints={opts.checkpoint: "/data/ct/" + backend})
    kw = A.llm_kwargs(carried.backend.options, _ctx(carried))
    assert kw["model"] == "/data/ct/" + backend and kw["quantization"] == "compressed-tensors"
    if opts.compress.method == "fp8_dynamic":
        assert opts.min_capability == 89 and run.backend.expect.weight_bits == 8
    else:
        assert run.backend.expect.weight_bits == 4 and opts.dtype == "float16"


def test_vllm_compress_needs_compressed_tensors():
    b = _yaml("backend", "vllm_ct_gptq_w4a16")
    b["options"]["quantization"] = "gptq"
    with pytest.raises(ConfigError, match="compress"):
        RunConfig.from_dict({"backend": b, "model": _yaml("model", "tiny"),
                             "workload": {"kind": "generate", "batch_sizes": [1]}, "weights": "synthetic",
                             "device": "cuda"}, "x")


def test_vllm_ct_synthetic_weights_are_dummy_weights_shaped_by_the_recipe():
    class Files(_Files):
        def config_folder(self, extra=None):
            self.extra = extra
            return Path("/cache/configs/abc")

    for backend, fmt in (("vllm_ct_gptq_w4a16", "pack-quantized"), ("vllm_ct_fp8_dynamic", "float-quantized")):
        run = _run(backend, model="tiny", device="cuda")
        files = Files()
        ctx = EngineContext(run=run.engine_view("cuda"), files=files, texts=BbcTexts(), cache_dir=Path("/cache"))
        kw = A.llm_kwargs(run.backend.options, ctx)
        assert kw["load_format"] == "dummy" and kw["model"] == "/cache/configs/abc"
        qc = files.extra["quantization_config"]
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == fmt
        assert qc["ignore"] == ["lm_head"]


@needs_llmc
def test_recipe_config_matches_what_llm_compressor_writes():
    """The dummy-weight config must be the one a real checkpoint carries (the fields vLLM reads)."""
    for backend in CT:
        engine = _open(_run(backend))
        real = json.loads((engine.checkpoint.folder / "config.json").read_text())["quantization_config"]
        ours = engine.options.compress.quantization_config()
        assert (ours["format"], ours["ignore"], ours["quant_method"]) == (real["format"], real["ignore"],
                                                                         real["quant_method"])
        for part in ("weights", "input_activations"):
            a, b = ours["config_groups"]["group_0"][part], real["config_groups"]["group_0"][part]
            assert (a is None) == (b is None)
            if a:
                assert {k: b[k] for k in a} == a, (backend, part)
