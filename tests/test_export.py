"""`jepa export --format hf`: the LM as LlamaForCausalLM, loaded by transformers with no remote code.

Three small runs (a few seconds each on CPU): an LM-only run with an untied head, a JEPA
arm with a tied head (both trained with `model.logit_bias=false`, and the JEPA arm with
`model.lm_bridge=false`), and a JEPA arm with the defaults, which cannot be a plain Llama.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import cli  # noqa: F401  (fixture)
from train_helpers import finished_run

transformers = pytest.importorskip("transformers")  # the dev extra installs it

EXPORTABLE = ("model.logit_bias=false", "model.lm_bridge=false")


def _train(tmp_path_factory, name: str, *extra: str, baseline: bool) -> Path:
    torch.set_num_threads(1)
    return finished_run(tmp_path_factory.mktemp(name), name, *extra, baseline=baseline)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "base", *EXPORTABLE, "model.weight_tying=false", baseline=True)


@pytest.fixture(scope="module")
def jepa_run(tmp_path_factory) -> Path:
    # a RoPE base other than the default: an export that lost it would not match
    return _train(tmp_path_factory, "jepa", *EXPORTABLE, "model.weight_tying=true", "model.rope_base=500.0", baseline=False)


@pytest.fixture(scope="module")
def default_jepa_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "default", baseline=False)


def _export(run, out: Path, **kw):
    from jepa_core.tools.export import export_hf

    return export_hf(run, out, **kw)


def _check_matches(run: Path, out: Path) -> None:
    """Logits within 1e-4 of jepa's, and the same greedy continuation as `jepa sample --temperature 0`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jepa_core.tools.sample import load_for_sampling, sample_text

    sm = load_for_sampling(run, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(out)  # no trust_remote_code
    assert type(hf).__name__ == "LlamaForCausalLM"
    hf.eval()
    T, V = sm.block_size, sm.tokenizer.vocab_size
    g = torch.Generator().manual_seed(0)
    text_ids = sm.tokenizer.encode("ROMEO:\nWhat light through yonder window breaks? It is the east.")[:T]
    batches = [torch.tensor([text_ids]), torch.randint(0, V, (3, T), generator=g)]
    with torch.no_grad():
        for ids in batches:
            want = sm.model.lm_logits(ids).float()
            got = hf(input_ids=ids).logits.float()
            assert got.shape == want.shape
            diff = (got - want).abs().max().item()
            assert diff < 1e-4, f"max |logit difference| {diff:.3g}"

    # greedy: jepa's sampler at temperature 0 against transformers' generate (within the block size)
    prompt = sm.tokenizer.encode("ROMEO:")
    n = T - len(prompt)
    ours = sm.model.generate(torch.tensor([prompt]), n, temperature=0)[0, len(prompt) :].tolist()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=n, do_sample=False)
    theirs = theirs[0, len(prompt) :].tolist()
    eos = sm.tokenizer.eos_id
    # transformers stops at <eos> (generation_config.eos_token_id); jepa's sampler does not
    assert theirs == ours[: len(theirs)] and (len(theirs) == n or theirs[-1] == eos)
    text = sample_text(sm, "ROMEO:", n, temperature=0)  # what `jepa sample --temperature 0` prints
    tok = AutoTokenizer.from_pretrained(out)
    if eos not in ours:
        assert tok.decode(theirs, skip_special_tokens=True) == text


def test_baseline_export_is_llama_and_matches(baseline_run, tmp_path):
    out = tmp_path / "hf"
    r = _export(baseline_run, out)
    assert r.architecture == "LlamaForCausalLM" and r.left_out == 0 and r.step == 8
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == 32 and config["intermediate_size"] == 128  # 8/3 * 32 -> 86 -> 128
    assert "auto_map" not in config  # nothing to run remotely
    assert any("logit_scale" in n for n in r.notes)
    _check_matches(baseline_run, out)


def test_jepa_export_is_its_lm_part_and_matches(jepa_run, tmp_path):
    out = tmp_path / "hf"
    r = _export(f"{jepa_run}:best", out)
    assert r.left_out > 0  # the JEPA heads and the EMA teacher stay behind
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.metadata()["format"] == "pt"
    assert not any(n.startswith(("jepa", "teacher", "transformer")) for n in names)
    assert "lm_head.weight" not in names  # tied: transformers ties it to the embedding
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["rope_theta"] == 500.0
    _check_matches(jepa_run, out)


def test_tokenizer_loads_as_fast_tokenizer_and_encodes_like_jepa(baseline_run, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from jepa_core.data.tokenizer import BPETokenizer

    out = tmp_path / "hf"
    _export(baseline_run, out)
    ours = BPETokenizer.from_file(baseline_run / "tokenizer.json")
    for tok in (AutoTokenizer.from_pretrained(out), PreTrainedTokenizerFast.from_pretrained(out)):
        assert isinstance(tok, PreTrainedTokenizerFast)
        for text in ("ROMEO:\nWhat light through yonder window breaks?", "  two  spaces, tabs\tand ünïcödé ✓\n\n", "x"):
            assert tok(text)["input_ids"] == ours.encode(text)  # no <bos> or <eos> added, as in training
            assert tok.decode(ours.encode(text)) == ours.decode(ours.encode(text))
        assert tok.eos_token == "<eos>" and tok.eos_token_id == ours.eos_id
        assert tok.pad_token_id == ours.pad_id and len(tok) == ours.vocab_size
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == ours.eos_id


def test_bf16_export_loads(baseline_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    _export(baseline_run, out, dtype="bfloat16")
    hf = AutoModelForCausalLM.from_pretrained(out, torch_dtype="auto")
    assert hf.dtype == torch.bfloat16


def test_default_jepa_arm_is_refused_naming_the_settings(default_jepa_run, tmp_path, cli):
    out = tmp_path / "hf"
    r = cli("export", str(default_jepa_run), str(out), "--format", "hf")
    assert r.returncode == 2
    msg = " ".join(r.stderr.split())
    assert "model.lm_bridge" in msg and "model.logit_bias" in msg and "LlamaForCausalLM" in msg
    assert "--set model.lm_bridge=false" in msg
    assert not (out / "model.safetensors").exists()


def test_blockers_one_at_a_time():
    from jepa_core.config import load_config
    from jepa_core.tools.export import llama_blockers

    base = load_config("tiny-baseline")
    jepa = load_config("tiny")
    zero, nonzero = torch.zeros(5), torch.tensor([0.0, 0.1, 0, 0, 0])
    assert llama_blockers(base, {"transformer.out_bias": zero}) == []  # an all-zero bias is dropped
    assert [k for k, _ in llama_blockers(base, {"transformer.out_bias": nonzero})] == ["model.logit_bias"]
    assert [k for k, _ in llama_blockers(jepa, {})] == ["model.lm_bridge"]
    assert llama_blockers(load_config("tiny", ["model.lm_bridge=false"]), {}) == []


def test_cli_export_says_lm_only_and_guards_the_folder(jepa_run, tmp_path, cli):
    out = tmp_path / "hf"
    r = cli("export", str(jepa_run), str(out), "--format", "hf")
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "LlamaForCausalLM" in said and "LM only" in said and "EMA teacher" in said and "lm_eval" in said
    again = cli("export", str(jepa_run), str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli("export", str(jepa_run), str(out), "--force").returncode == 0
    bad = cli("export", str(jepa_run), str(tmp_path / "other"), "--format", "gguf")
    assert bad.returncode == 2 and "--format" in bad.stderr
    bad = cli("export", str(jepa_run), str(tmp_path / "other"), "--dtype", "int8")
    assert bad.returncode == 2 and "--dtype" in bad.stderr


def test_help_has_an_example(cli):
    r = cli("export", "--help")
    assert r.returncode == 0 and "Example" in r.stdout and "jepa export" in r.stdout and "lm_eval" in r.stdout


def test_core_export_needs_no_transformers():
    """The export is written with torch and safetensors; transformers is only for reading it back."""
    src = (Path(__file__).resolve().parent.parent / "jepa_core" / "tools" / "export.py").read_text(encoding="utf-8")
    mods = {a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.split(".")[0] == "transformers" for m in mods)


# -- the settings that make an LM exportable ------------------------------------------------


def test_logit_bias_false_has_no_bias_and_bridge_false_has_no_bridge():
    from jepa_core.config import load_config
    from jepa_core.model import JepaLM

    small = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "data.block_size=32", "jepa.latent_dim=16",
             "jepa.horizons=[1, 4]", "jepa.horizon_probs=[0.5, 0.5]", "jepa.pairs_per_seq=2"]
    cfg = load_config("tiny", [*small, *EXPORTABLE])
    torch.manual_seed(0)
    m = JepaLM.from_config(cfg, 300)
    names = set(dict(m.named_parameters()))
    assert "transformer.out_bias" not in names and not any("lm_bridge" in n or "bridge_gate" in n for n in names)
    assert "transformer.tap_norm.weight" in names and any(n.startswith("jepa.") for n in names)  # still a JEPA arm
    tr = m.transformer
    idx = torch.randint(0, 300, (2, 16))
    h, h_tap = tr(idx)
    ref = (h @ tr.head_weight().T) * tr.logit_scale
    assert torch.allclose(tr.logits(h), ref, atol=1e-6) and h_tap is not None
    # the LM above the tap reads the tap as it is: the stack is the baseline's
    x = tr.tok_emb(idx)
    for b in tr.blocks:
        x = b(x)
    assert torch.allclose(tr.norm_f(x), h, atol=1e-6)
    out = m(idx, torch.randint(0, 300, (2, 16)))
    out.loss.backward()  # trains (JEPA loss included) without the bridge
    assert torch.isfinite(out.loss) and out.jepa_loss is not None


# -- read back: what export writes, `read_hf_model` (--init-from hf:) reads -----------------------


@pytest.mark.parametrize("which", ["baseline_run", "jepa_run"])
def test_llama_export_reads_back_to_the_same_lm(which, request, tmp_path):
    from jepa_core.model.hf import LLAMA, read_hf_model
    from jepa_core.tools.sample import load_for_sampling

    from hf_helpers import jepa_model_from

    run = request.getfixturevalue(which)
    out = tmp_path / "hf"
    _export(run, out)
    sm = load_for_sampling(run, "cpu")
    src = sm.model.state_dict()
    hfm = read_hf_model(out)
    assert hfm.architecture == LLAMA and hfm.run_baseline and hfm.tokenizer == out / "tokenizer.json"
    m = sm.cfg.model
    assert hfm.model == {k: getattr(m, k) for k in hfm.model}  # the run's own keys, ff_multiplier and ff_round included
    assert set(hfm.model) == {"d_model", "n_layers", "n_heads", "ff_multiplier", "ff_round", "rope_base", "norm_eps", "weight_tying"}
    assert hfm.max_position_embeddings == sm.cfg.data.block_size
    for name, t in hfm.tensors.items():
        if name == "transformer.norm_f.weight":  # the logit scale is folded in
            assert torch.allclose(t, src[name] * src["transformer.logit_scale"], rtol=1e-6)
        elif name == "transformer.logit_scale":
            assert t.item() == 1.0
        elif name == "transformer.out_bias":
            assert not t.any()
        else:
            assert torch.equal(t, src[name]), name
    ours = jepa_model_from(hfm, sm.block_size)
    ids = torch.randint(0, sm.tokenizer.vocab_size, (2, sm.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours.lm_logits(ids) - sm.model.lm_logits(ids)).abs().max().item() < 1e-5
