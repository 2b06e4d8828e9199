"""`read_hf_model`: a Hugging Face directory read as data, into jepa's names and [model] keys.

The reference is transformers itself: a random LlamaForCausalLM saved with save_pretrained,
read back and loaded into jepa's own model, gives transformers' logits. Each refusal is a
directory a user could hand to `--init-from hf:`.
"""

from __future__ import annotations

import json

import pytest
import torch

from jepa_core.errors import CheckpointError

transformers = pytest.importorskip("transformers")  # the dev extra installs it

from hf_helpers import V, jepa_model_from, save_llama

T = 40


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tied", [False, True])
def test_random_llama_gives_transformers_logits(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    from jepa_core.model.hf import LLAMA, read_hf_model

    d, ff = (48, 128) if tied else (32, 80)  # 128 = jepa's default SwiGLU size for 48; 80 is not
    src = save_llama(tmp_path / "llama", tied=tied, d=d, ff=ff)
    hfm = read_hf_model(src)
    assert hfm.architecture == LLAMA and hfm.vocab_size == V and hfm.run_baseline and hfm.tokenizer is None
    assert hfm.model["d_model"] == d and hfm.model["n_layers"] == 2 and hfm.model["n_heads"] == 2
    assert hfm.model["rope_base"] == 500.0 and hfm.model["norm_eps"] == 1e-5 and hfm.model["weight_tying"] is tied
    if tied:
        assert (hfm.model["ff_multiplier"], hfm.model["ff_round"]) == (8 / 3, 64)  # jepa's defaults when they fit
    assert all(t.dtype == torch.float32 for t in hfm.tensors.values())
    assert hfm.tensors["transformer.logit_scale"].item() == 1.0 and not hfm.tensors["transformer.out_bias"].any()
    ours = jepa_model_from(hfm)
    theirs = AutoModelForCausalLM.from_pretrained(src).eval()
    with torch.no_grad():
        for seed in (0, 1):
            ids = _ids(seed)
            want = theirs(input_ids=ids).logits
            got = ours.lm_logits(ids)
            assert want.abs().max() > 1.0  # logits big enough that a wrong mapping shows
            assert (got - want).abs().max().item() < 1e-4


def test_sharded_llama_reads_the_same_tensors(tmp_path):
    from transformers import LlamaForCausalLM

    from jepa_core.model.hf import WEIGHTS_INDEX, read_hf_model

    one = save_llama(tmp_path / "one")
    sharded = tmp_path / "sharded"
    LlamaForCausalLM.from_pretrained(one).save_pretrained(sharded, max_shard_size="30KB")
    assert (sharded / WEIGHTS_INDEX).is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    a, b = read_hf_model(one), read_hf_model(sharded)
    assert a.model == b.model and a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_the_mapping_is_one_table_both_ways():
    from jepa_core.model.hf import JEPA, LLAMA, from_hf, name_map, to_hf

    g = torch.Generator().manual_seed(0)
    names = {j for j, _ in name_map(2, JEPA)}
    shapes = {"transformer.logit_scale": (), "transformer.bridge_gate": ()}
    src = {n: torch.randn(shapes.get(n, (6, 4)), generator=g) for n in names}
    back = from_hf(to_hf(src, 2, JEPA), 2, JEPA, 6)
    assert back.keys() == src.keys() and all(torch.equal(back[n], src[n]) for n in src)
    # a Llama holds the stack, with the scale folded into the final norm
    hf = to_hf(src, 2, LLAMA)
    assert not any("bridge" in n or n == "lm_head.bias" for n in hf)
    assert torch.allclose(hf["model.norm.weight"], src["transformer.norm_f.weight"] * src["transformer.logit_scale"])
    q, k, v = (hf[f"model.layers.1.self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(torch.cat([q, k, v]), src["transformer.blocks.1.attn.qkv.weight"])


# -- refusals ----------------------------------------------------------------------------------


def _refused(path, *needles: str) -> str:
    from jepa_core.model.hf import read_hf_model

    with pytest.raises(CheckpointError) as e:
        read_hf_model(path)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert e.value.hint
    return msg


def test_gpt2_layout_is_refused_naming_it(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=V, bos_token_id=0, eos_token_id=0)).save_pretrained(out)
    _refused(out, "GPT2LMHeadModel", "LlamaForCausalLM")


def test_pickled_weights_only_are_refused(tmp_path):
    out = save_llama(tmp_path / "llama")
    (out / "model.safetensors").unlink()
    (out / "pytorch_model.bin").write_bytes(b"\x80\x04not read")  # never opened
    _refused(out, "pytorch_model.bin", "safetensors", "never unpickles")


def test_corrupt_safetensors_are_refused(tmp_path):
    out = save_llama(tmp_path / "llama")
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])  # cut short
    _refused(out, "model.safetensors", "truncated")
    w.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _refused(out, "model.safetensors", "not valid JSON")


def test_grouped_query_attention_is_refused(tmp_path):
    out = save_llama(tmp_path / "gqa", num_key_value_heads=1)
    _refused(out, "grouped-query attention", "num_key_value_heads = 1")


@pytest.mark.parametrize(
    "edit,needle",
    [
        ({"attention_bias": True}, "attention_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}}, "rope_type = 'linear'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling"),
        ({"intermediate_size": 96}, "mlp.gate_proj.weight has shape [80, 32]"),
        ({"num_hidden_layers": 3}, "missing model.layers.2"),
        ({"hidden_size": None}, "hidden_size"),
    ],
)
def test_config_features_jepa_cannot_reproduce_are_refused(tmp_path, edit, needle):
    out = save_llama(tmp_path / "llama")
    config = json.loads((out / "config.json").read_text())
    config.update(edit)
    (out / "config.json").write_text(json.dumps(config))
    _refused(out, needle)


def test_a_tied_config_with_a_saved_head_reads_the_embedding(tmp_path):
    """transformers ties lm_head to the embedding after loading, so a saved lm_head is unused; jepa drops it too."""
    from jepa_core.model.hf import read_hf_model

    out = save_llama(tmp_path / "llama")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    hfm = read_hf_model(out)
    assert hfm.model["weight_tying"] is True and "transformer.lm_head.weight" not in hfm.tensors
    assert any("lm_head.weight dropped" in n for n in hfm.notes)


def test_missing_folder_or_config_is_refused(tmp_path):
    _refused(tmp_path / "nope", "no such folder")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "config.json")
    (tmp_path / "empty" / "config.json").write_text("{broken")
    _refused(tmp_path / "empty", "not readable JSON")


def test_code_in_the_folder_is_never_run(tmp_path):
    """A folder whose config points at remote code: read as data, the code never imported."""
    from jepa_core.model.hf import read_hf_model

    out = save_llama(tmp_path / "llama")
    marker = tmp_path / "ran"
    (out / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((out / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.LlamaForCausalLM"}
    (out / "config.json").write_text(json.dumps(config))
    read_hf_model(out)
    assert not marker.exists()


def test_the_exporting_runs_ff_keys_are_used_only_when_they_give_the_size(tmp_path):
    """A SwiGLU size has many (ff_multiplier, ff_round) spellings: jepa export's own are kept when they fit."""
    from jepa_core.model.hf import read_hf_model

    out = save_llama(tmp_path / "llama", d=32, ff=128)
    config = json.loads((out / "config.json").read_text())
    for hint, want in [({"ff_multiplier": 4.0, "ff_round": 64}, (4.0, 64)), ({"ff_multiplier": 2.0, "ff_round": 64}, (8 / 3, 64))]:
        (out / "config.json").write_text(json.dumps(config | {"jepa_model": hint}))
        m = read_hf_model(out).model
        assert (m["ff_multiplier"], m["ff_round"]) == want
