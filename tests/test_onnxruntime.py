"""ONNX Runtime engine: export, quantize, cache, generate / classify / score against transformers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

from backends.contract import EngineContext, RunFailure  # noqa: E402
from runners.evaldata import BbcTexts  # noqa: E402
from backends.onnxruntime import (  # noqa: E402
    CPU_EP, CUDA_EP, OnnxRuntimeEngine, Options, left_pad, node_placement, placement_text, resolve_providers,
)
from runners.plan.config import BackendSpec, ModelSpec, RunConfig, WorkloadSpec  # noqa: E402
from runners.open.files import ModelFiles  # noqa: E402
from backends.contract import ConfigError, HostClock, StepTimer  # noqa: E402
from backends.onnxruntime.export import export_model, first_node_prefilter  # noqa: E402
from backends.onnxruntime.progress import Heartbeat, quiet_libraries  # noqa: E402
from runners.open.verify import verdict  # noqa: E402
from runners.plan.config import Expectation  # noqa: E402
from runners.plan.strict import build  # noqa: E402

from .conftest import FAST, bench  # noqa: E402

CONF = Path(__file__).parents[1] / "conf" / "backend"

# initializer_range 0.5: peaked logits, so greedy argmax is not decided by float rounding.
LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
         "initializer_range": 0.5, "tie_word_embeddings": True}
BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 128}


# ONNX artifacts go to a folder of this module's own (synthetic weights may come from a kept cache):
# the cache-hit assertions below need to see the first export happen.
ONNX_CACHE: dict[str, Path] = {}
# ...and to see it in this file's order (the fp32 export before its reuse, a rewrite before any census
# that shares its key): under pytest-xdist (`--dist loadgroup`) the whole file runs on one worker, in order.
pytestmark = pytest.mark.xdist_group("onnxruntime")


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    ONNX_CACHE["dir"] = tmp_path_factory.mktemp("onnx-artifacts")
    yield
    ONNX_CACHE.clear()


def make_engine(options: dict | None = None, *, arch=LLAMA, task="causal_lm", kind="generate",
                device="cpu", num_labels=3, weights="synthetic", **spec_kw) -> OnnxRuntimeEngine:
    spec = ModelSpec(name=f"tiny-{arch['model_type']}", task=task, architecture=arch, num_labels=num_labels,
                     **spec_kw)
    opts = build(Options, options or {}, "backend.options")
    run = RunConfig(backend=BackendSpec("ort_test", "onnxruntime", opts), model=spec,
                    workload=WorkloadSpec(kind=kind, batch_sizes=[1]), weights=weights, device=device, task=task)
    view = run.engine_view(device)
    OnnxRuntimeEngine.validate(opts, view)
    files = ModelFiles(spec, weights, task, num_labels, device)
    ctx = EngineContext(run=view, files=files, texts=BbcTexts(), cache_dir=ONNX_CACHE["dir"])
    return OnnxRuntimeEngine(opts, ctx)


def loaded(options: dict | None = None, **kw) -> OnnxRuntimeEngine:
    engine = make_engine(options, **kw)
    assert engine.check() is None
    engine.prepare()
    engine.load()
    return engine


def hf_greedy(engine: OnnxRuntimeEngine, prompts: list[list[int]], n: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(engine.ctx.files.folder(), dtype=torch.float32).eval()
    ids, mask, _ = left_pad(prompts)
    # Plain argmax for n steps, as the engines do. generate() fills an unset eos_token_id from the
    # model's generation config (then stops, or with min_new_tokens suppresses EOS): clear it there.
    model.generation_config.eos_token_id = None
    gen = GenerationConfig(max_new_tokens=n, do_sample=False, num_beams=1, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             generation_config=gen)
    return out[:, ids.shape[1]:].tolist()


# -- pure helpers ----------------------------------------------------------------------------------
def test_node_placement_from_fake_profile():
    def ev(name, provider, op, dtype="float"):
        return {"cat": "Node", "name": f"{name}_kernel_time",
                "args": {"provider": provider, "op_name": op, "input_type_shape": [{dtype: [2, 8]}],
                         "output_type_shape": [{"int32" if op == "MatMulInteger" else dtype: [2, 8]}]}}

    profile = [{"cat": "Session", "name": "model_run", "args": {}},
               ev("mm0", CUDA_EP, "MatMulInteger", "uint8"), ev("q0", CPU_EP, "DynamicQuantizeLinear"),
               ev("mm1", CUDA_EP, "MatMulInteger", "int8"), ev("cp", CUDA_EP, "MemcpyToHost"),
               ev("shape", CPU_EP, "Concat", "int64"),
               ev("mm0", CUDA_EP, "MatMulInteger", "uint8"),  # the same node in a second profiled run
               {"cat": "Node", "name": "mm0_fence_before", "args": {"op_name": "MatMulInteger"}}]
    got = node_placement(json.loads(json.dumps(profile)))
    assert got["node_placement"] == {CUDA_EP: 3, CPU_EP: 2}
    assert got["data_node_placement"] == {CUDA_EP: 3, CPU_EP: 1}
    assert got["nodes_total"] == 5
    assert got["ops_by_provider"][CPU_EP] == {"DynamicQuantizeLinear": 1, "Concat": 1}
    text = placement_text(got["node_placement"], got["nodes_total"], got["data_node_placement"])
    assert text == "CUDA 3/5 nodes, CPU 2/5 nodes (1 on float/quantized tensors)"
    assert placement_text({CPU_EP: 7}, 7, {CPU_EP: 5}) == "CPU 7/7 nodes"
    assert placement_text({}, 0) == "no nodes profiled"


def test_providers_and_padding():
    assert resolve_providers("auto", "cpu") == [CPU_EP]
    assert resolve_providers("auto", "cuda") == [CUDA_EP, CPU_EP]
    assert resolve_providers("cpu", "cuda") == [CPU_EP]
    ids, mask, pos = left_pad([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


@pytest.mark.parametrize("options, match", [
    ({"precision": "int3"}, "choose one of 'fp32', 'fp16', 'int8', 'int4'"),
    ({"precision": "int8", "block_size": 32}, "block_size: only applies to precision int4"),
    ({"precision": "int4", "per_channel": True}, "per_channel: only applies to precision int8"),
    ({"precision": "int8", "dtype": "float16"}, "precision int8 runs on float32"),
    ({"precision": "fp32", "dtype": "float16"}, "precision fp32 runs on float32"),
    ({"precision": "int4", "block_size": 48}, "power of 2"),
    ({"precision": "int4", "accuracy_level": 7}, "0-4"),
    ({"precision": "int8", "op_types": ["MatMul", "Softmax"]}, "Softmax not valid for int8"),
    ({"precision": "fp16", "op_types": ["MatMul"]}, "op_types: only applies"),
    ({"blocksize": 32}, "unknown key backend.options.blocksize"),
])
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        build(Options, options, "backend.options")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("conf/backend/ort_*.yaml")),
                         ids=lambda p: p.stem)
def test_backend_yamls_build(path):
    import yaml

    backend = yaml.safe_load(path.read_text())
    run = RunConfig.from_dict({"backend": backend, "model": {"name": "t", "task": "causal_lm", "architecture": LLAMA},
                               "workload": {"kind": "generate", "batch_sizes": [1]}, "device": "cpu"}, path.stem)
    assert run.backend.engine == "onnxruntime" and isinstance(run.backend.options, Options)
    # ort_<precision>[_<graph dtype>]: the name says what the options build.
    precision, _, dtype = path.stem.removeprefix("ort_").partition("_")
    assert run.backend.options.precision == precision
    assert run.backend.options.graph_dtype == {"": run.backend.options.graph_dtype, "fp16": "float16"}[dtype]


def test_validate_rejects_cuda_provider_on_cpu():
    with pytest.raises(ConfigError, match="providers: cuda needs device=cuda"):
        make_engine({"providers": "cuda"})


def test_check_reports_missing_packages_and_cuda(monkeypatch):
    engine = make_engine()
    monkeypatch.setattr(OnnxRuntimeEngine, "requires", ("onnxruntime", "no_such_module_qb"))
    failure = engine.check()
    assert failure.status == "missing_dependency" and "quantbench[ort]" in failure.reason
    gpu = make_engine(device="cuda")
    assert "quantbench[ort-gpu]" in gpu.check().reason
    monkeypatch.undo()
    import onnxruntime as ort

    if CUDA_EP not in ort.get_available_providers():
        failure = make_engine(device="cuda").check()
        assert failure.status == "unsupported_hardware" and CUDA_EP in failure.reason
        # Compiled in but not starting (libraries missing): found before any export, not after.
        monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_EP, CPU_EP])
        failure = make_engine(device="cuda").check()
        assert failure.status == "unsupported_hardware" and "could not start" in failure.reason
        assert "fell back to CPUExecutionProvider" in failure.reason


# -- export and run ------------------------------------------------------------------------------
def test_fp32_generate_matches_transformers_and_places_nodes():
    engine = loaded()
    info = engine.describe()
    assert info["providers"] == [CPU_EP] and info["providers_requested"] == [CPU_EP]
    assert set(info["provider_options"]) == {CPU_EP}  # what each provider in the session runs with
    assert info["onnxruntime_build"] == "CPU" and Path(info["onnxruntime_module"], "__init__.py").is_file()
    # Profiled like the decoder; on float32 logits ORT drops the no-op Cast.
    assert info["greedy_pick"].endswith("copied to the host: CPU 1/1 nodes")
    assert info["greedy_node_placement"] == {CPU_EP: {"ArgMax": 1}}
    assert info["node_placement"] == {CPU_EP: info["nodes_total"]} and info["nodes_total"] > 10
    assert info["placement"] == f"CPU {info['nodes_total']}/{info['nodes_total']} nodes"
    stats = engine.artefact_stats()
    assert stats["export_s"] > 0 and engine.cache_hit is False and "quantize_s" not in stats

    prompts = [[3, 14, 15, 92, 65], [35, 89, 79, 32, 38]]
    timer = StepTimer(HostClock())
    timer.begin()
    tokens = engine.generate(prompts, 7, timer)
    timer.end()
    assert [len(t) for t in tokens] == [7, 7]
    assert timer.sample().new_tokens == 7
    assert tokens == hf_greedy(engine, prompts, 7)
    # Left padding: positions and mask must follow HF generate exactly.
    ragged = [[3, 14, 15, 92, 65, 35], [89, 79]]
    assert engine.generate(ragged, 5, StepTimer(HostClock())) == hf_greedy(engine, ragged, 5)


def test_score_matches_transformers():
    from transformers import AutoModelForCausalLM

    engine = loaded()
    assert (engine.artefact_stats(), engine.cache_hit) == ({}, True)
    seq = list(range(10, 30))
    got = engine.score(seq)
    model = AutoModelForCausalLM.from_pretrained(engine.ctx.files.folder(), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1).numpy()
    assert got.values.shape == (20, 256) and got.values.dtype == np.float32 and got.indices is None
    np.testing.assert_allclose(got.values, ref, atol=1e-4)


@pytest.mark.parametrize("precision, op", [("int8", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_quantized_generate_and_cache_reuse(precision, op):
    options = {"precision": precision}
    loaded()  # the fp32 export the rewrite starts from (made here if no earlier test on this worker made it)
    first = loaded(options)
    info = first.describe()
    stats = first.artefact_stats()
    assert first.cache_hit is False and stats["quantize_s"] > 0 and "export_s" not in stats  # fp32 export reused
    # every projection but the (tied) LM head
    assert info["graph_ops"][op] == 2 * 7 and info["graph_ops"].get("MatMul", 0) >= 1
    tokens = first.generate([[1, 2, 3, 4]] * 3, 4, StepTimer(HostClock()))
    assert [len(t) for t in tokens] == [4, 4, 4]
    lp = first.score(list(range(12))).values
    assert lp.shape == (12, 256) and np.allclose(np.exp(lp).sum(-1), 1, atol=1e-3)

    again = loaded(options)
    assert (again.artefact_stats(), again.cache_hit) == ({}, True)
    assert again.generate([[1, 2, 3, 4]] * 3, 4, StepTimer(HostClock())) == tokens
    assert again.memory_facts()["onnx_artifact_mib"] > 0


def test_int4_options_change_the_artifact():
    engine = loaded({"precision": "int4", "block_size": 16, "accuracy_level": 4})
    info = engine.describe()
    assert engine.cache_hit is False
    assert info["quantization"]["block_size"] == 16 and info["quantization"]["accuracy_level"] == 4


def test_classify_matches_transformers():
    from transformers import AutoModelForSequenceClassification

    engine = loaded(arch=BERT, task="sequence_classification", kind="classify")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, (3, 9))
    mask = np.ones_like(ids)
    mask[2, 6:] = 0
    got = engine.classify(ids, mask)
    model = AutoModelForSequenceClassification.from_pretrained(engine.ctx.files.folder(), dtype=torch.float32)
    with torch.no_grad():
        ref = model.eval()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    assert got.shape == (3, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(RunFailure, match="causal_lm"):
        engine.score([1, 2, 3])


# -- weight census: the proof that the precision's rewrite ran -------------------------------------
def backend_yaml(name: str) -> tuple[dict, Expectation]:
    import yaml

    backend = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    options = {k: v for k, v in backend["options"].items() if k != "providers"}
    return options, build(Expectation, backend["expect"], "backend.expect")


@pytest.mark.parametrize("backend, kind, bits", [("ort_fp32", "MatMul", 32), ("ort_int8", "MatMulInteger", 8.008),
                                                 ("ort_int4", "MatMulNBits", 5), ("ort_int4_fp16", "MatMulNBits", 4.5)])
def test_census_proves_each_yaml_expectation(backend, kind, bits):
    options, expect = backend_yaml(backend)
    engine = loaded(options)
    census = engine.census()
    assert verdict(expect, census, backend) is None
    assert census.linear_layers == 2 * 7 + 1  # every projection and the LM head; attention's MatMuls hold no weight
    # The tied LM head reaches its MatMul through a Transpose: still found, named, and float.
    assert census.unquantized[-1] == "lm_head"
    info = engine.describe()
    if expect.quantized:
        assert census.layers == {kind: 14, "MatMul": 1} and census.quantized_kinds == [kind]
        assert census.quantized_bits == pytest.approx(bits, abs=0.01)
        assert census.unquantized == ["lm_head"] and census.unquantized_total == 1
        assert any("lm_head" in n and "by design" in n for n in census.notes)
        assert info["quantized_nodes"] == {kind: 14} and info["unquantized_nodes"] == ["lm_head"]
    else:
        assert census.quantized_layers == 0 and census.linear_bits == bits and not census.notes
        assert census.unquantized[0] == "model.layers.0.self_attn.q_proj"
    assert info["linear_kernels"].startswith(f"{kind} x") and census.summary().startswith(
        f"{census.quantized_layers}/15 linear layers quantized")
    # Every initializer, embedding included, and no more than the files hold.
    assert census.linear_bytes < census.weights_bytes <= engine.memory_facts()["onnx_artifact_mib"] * 2**20
    assert engine.memory_facts()["weights_mib"] == round(census.weights_bytes / 2**20, 1)


def test_quantization_that_skips_every_matmul_is_not_applied():
    options, expect = backend_yaml("ort_int8")
    engine = loaded({**options, "op_types": ["Conv"]})  # a valid choice that matches no node of a decoder
    census = engine.census()
    assert census.quantized_layers == 0 and census.linear_layers == 15
    reason = verdict(expect, census, "ort_int8")
    assert reason and "0 of 15 are" in reason and "MatMul x15" in reason
    # The same graph passes as what it is: a float32 graph.
    assert verdict(backend_yaml("ort_fp32")[1], census, "ort_fp32") is None


def test_classifier_head_stays_float_in_int8():
    # quantize_dynamic rewrites Gemm as `<name>_MatMul` before excluding nodes: the head must stay float anyway.
    engine = loaded({"precision": "int8"}, arch=BERT, task="sequence_classification", kind="classify")
    census = engine.census()
    assert census.linear_layers == 8 and census.quantized_layers == 7
    assert len(census.unquantized) == 1 and census.unquantized[0].startswith("output head")
    assert any("by design" in n for n in census.notes)




@pytest.mark.parametrize("dtype, onnx_type", [(np.float16, "tensor(float16)"), (np.float32, "tensor(float)")])
def test_greedy_pick_graph_is_argmax(dtype, onnx_type):
    import onnxruntime as ort

    from backends.onnxruntime.engine import argmax_model

    logits = np.random.default_rng(0).standard_normal((3, 2, 50)).astype(dtype)
    session = ort.InferenceSession(argmax_model(onnx_type), providers=[CPU_EP])
    (picked,) = session.run(None, {"logits": logits})
    assert picked.dtype == np.int64 and picked.shape == (3, 2)
    assert (picked == logits.astype(np.float32).argmax(-1)).all()


def test_fp16_graph_generates_its_own_greedy_tokens():
    # The pick runs in its own session: its tokens must be the argmax of the decoder's own logits.
    engine = loaded({"precision": "fp16"})
    assert engine.describe()["greedy_node_placement"] == {CPU_EP: {"Cast": 1, "ArgMax": 1}}
    prompt = [3, 14, 15, 92, 65]
    tokens = engine.generate([prompt], 4, StepTimer(HostClock()))[0]
    for step in range(4):
        seq = prompt + tokens[:step]
        assert int(engine.score(seq).values[-1].argmax()) == tokens[step]

def gemm_graph(trans_b: int, with_shape: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "head.weight")
    node = helper.make_node("Gemm", ["x", "head.weight"], ["logits"], name="head", transB=trans_b)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], [w])
    if with_shape:  # what the dynamo exporter writes for every initializer
        graph.value_info.append(helper.make_tensor_value_info("head.weight", TensorProto.FLOAT, [3, 4]))
    return onnx.helper.make_model(graph)


def test_transposed_gemm_weight_shapes_are_found():
    # ORT 1.30's quantize_dynamic transposes these weights in place and then fails shape inference on
    # the stale entry (a ModernBERT head on the H200 host); the int8 rewrite drops exactly these.
    from backends.onnxruntime.quantize import transposed_gemm_shapes

    assert transposed_gemm_shapes(gemm_graph(1, True)) == ["head.weight"]
    assert transposed_gemm_shapes(gemm_graph(0, True)) == []  # not transposed: the entry stays valid
    assert transposed_gemm_shapes(gemm_graph(1, False)) == []

# -- allow_pickle -----------------------------------------------------------------------------------
def test_pickle_checkpoint_needs_allow_pickle(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = {**LLAMA, "num_hidden_layers": 1}
    cfg = AutoConfig.for_model(**arch)
    folder = tmp_path / "pickled"
    folder.mkdir()
    cfg.save_pretrained(folder)
    # transformers 5 writes safetensors whatever safe_serialization says: write the pickle ourselves.
    torch.save(AutoModelForCausalLM.from_config(cfg).state_dict(), folder / "pytorch_model.bin")

    refused = make_engine(arch=arch, weights="pretrained", path=str(folder))
    with pytest.raises(RunFailure, match=r"pytorch_model\.bin.*model\.allow_pickle=true") as info:
        refused.prepare()
    assert info.value.status == "invalid_config"

    allowed = make_engine(arch=arch, weights="pretrained", path=str(folder), allow_pickle=True)
    allowed.prepare()
    assert allowed.cache_hit is False
    # The export now in the cache is no licence: without the option, the folder is refused still.
    with pytest.raises(RunFailure, match="model.allow_pickle=true"):
        make_engine(arch=arch, weights="pretrained", path=str(folder)).prepare()


def test_export_refuses_pickle_without_the_option(tmp_path):
    # The exporter's own from_pretrained honours it too (e.g. a hub id, where no folder is checked first).
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{**LLAMA, "num_hidden_layers": 1})
    cfg.save_pretrained(tmp_path)
    torch.save(AutoModelForCausalLM.from_config(cfg).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(RunFailure, match="model.allow_pickle=true"):
        export_model(str(tmp_path), "causal_lm", "float32", 18, tmp_path)


# -- preparation: quiet, with progress, not timed as load ------------------------------------------
def test_prefilter_leaves_the_export_byte_identical(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path / "hf"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**{**LLAMA, "num_hidden_layers": 1})).save_pretrained(folder)
    with first_node_prefilter() as active:
        assert active, "onnxscript's matcher changed: the export is slow again (see first_node_prefilter)"
    files = {}
    for prefilter in (True, False):
        dest = tmp_path / str(prefilter)
        dest.mkdir()
        with quiet_libraries():
            export_model(str(folder), "causal_lm", "float32", 18, dest, prefilter=prefilter)
        files[prefilter] = {f.name: f.read_bytes() for f in dest.iterdir()}
    assert files[True].keys() == {"model.onnx", "model.onnx.data"}
    assert files[True] == files[False]


def test_quiet_libraries_keeps_warnings_and_our_console(caplog):
    import logging
    import warnings

    caplog.set_level(logging.INFO)
    with quiet_libraries():
        logging.getLogger("onnxscript.optimizer").info("Applied 554 rewrite rules")
        logging.getLogger("onnx_ir.passes").info("Removed 392 unused nodes")
        logging.info('Quantization parameters for tensor:"mul_330" not specified')  # ORT logs on the root logger
        logging.getLogger("torch.onnx._internal.exporter._registration").warning(
            "torchvision is not installed. Skipping torchvision::nms")
        logging.getLogger("transformers.utils.generic").warning(
            "`past_key_values`/`cache_params` are deprecated. Use `cache` instead.")
        logging.getLogger("quantbench").info("exporting tiny to ONNX (first time only): 10 s")
        logging.getLogger("onnxscript.optimizer").warning("a real problem")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=FutureWarning)  # what quiet_libraries set, re-applied
            warnings.warn("something else", UserWarning)
    logging.getLogger("onnxscript.optimizer").info("after the export")
    assert [r.getMessage() for r in caplog.records] == [
        "exporting tiny to ONNX (first time only): 10 s", "a real problem", "after the export"]
    assert [str(w.message) for w in caught] == ["something else"]


def test_heartbeat_reports_while_a_step_runs(caplog):
    import logging
    import time

    caplog.set_level(logging.INFO, logger="quantbench")
    with Heartbeat("exporting tiny to ONNX (first time only)", every_s=0.05) as beat:
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "quantbench"]
    assert lines[0] == "exporting tiny to ONNX (first time only) ..."
    assert sum(ln.startswith("exporting tiny to ONNX (first time only): ") and ln.endswith(" s") for ln in lines) >= 2
    assert lines[-1].startswith("exporting tiny to ONNX (first time only): done in") and beat.elapsed_s >= 0.3


def test_bench_reports_export_apart_from_load_and_keeps_the_console_quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cold-cache"))
    run_dir = tmp_path / "run"
    proc = bench("backend=ort_int8", *FAST, "weights=synthetic", "quality.enabled=false",
                 "workload.batch_sizes=[1]", f"hydra.run.dir={run_dir}", check=True)
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "ok", record["reason"]
    load = record["load"]
    assert load["export_s"] > 0 and load["quantize_s"] > 0 and record["engine_info"]["cache_hit"] is False
    assert load["prepare_s"] >= load["export_s"] + load["quantize_s"]
    assert load["load_s"] < load["export_s"]  # load opens a session; the export is preparation
    assert record["engine_info"]["census"]["quantized_layers"] == 2 * 7
    console = proc.stderr.splitlines()
    assert len(console) < 20, proc.stderr
    assert any("exporting tiny to ONNX (first time only)" in ln for ln in console)
    assert not any("onnxscript" in ln or "onnx_ir" in ln or "torchvision" in ln for ln in console), proc.stderr
    log = (run_dir / "run.log").read_text()
    assert not [ln for ln in log.splitlines() if " onnxscript." in ln or " onnx_ir." in ln
                or "Quantization parameters for tensor" in ln or "torchvision is not installed" in ln
                or "are deprecated" in ln]
