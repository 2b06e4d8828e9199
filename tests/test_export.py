"""`jepa export --format hf`: every run's LM, loaded by transformers.

Four small runs (a few seconds each on CPU). Two are Llama-compatible and export as a plain
LlamaForCausalLM (no remote code): an LM-only run with an untied head and a JEPA arm with a
tied head, trained with `model.logit_bias=false` (and the JEPA arm with `model.lm_bridge=false`).
Two are `tiny` and `tiny-baseline` as shipped, shrunk only in size and steps, so with a learned
logit bias (and the JEPA arm's lm_bridge): they export as JepaForCausalLM with its modeling file.
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
def tied_jepa_run(tmp_path_factory) -> Path:
    """A JEPA arm with the bridge and the bias and a tied head: the embedding is the head, lm_head.bias its own."""
    return _train(tmp_path_factory, "tied", "model.weight_tying=true", baseline=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """`tiny` as shipped, shrunk: lm_bridge and logit_bias on."""
    torch.set_num_threads(1)
    return finished_run(tmp_path_factory.mktemp("tiny"), "tiny", baseline=False, profile="tiny")


@pytest.fixture(scope="module")
def tiny_baseline_run(tmp_path_factory) -> Path:
    """`tiny-baseline` as shipped, shrunk: logit_bias on."""
    torch.set_num_threads(1)
    return finished_run(tmp_path_factory.mktemp("tinyb"), "tiny-baseline", baseline=True, profile="tiny-baseline")


def _export(run, out: Path, **kw):
    from jepa_core.tools.export import export_hf

    return export_hf(run, out, **kw)


def _check_matches(run: Path, out: Path, architecture: str = "LlamaForCausalLM") -> None:
    """Logits within 1e-4 of jepa's, and the same greedy continuation as `jepa sample --temperature 0`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jepa_core.tools.sample import load_for_sampling, sample_text

    sm = load_for_sampling(run, "cpu")
    # a Llama needs no remote code; a JepaForCausalLM is refused without trust_remote_code
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=architecture != "LlamaForCausalLM")
    assert type(hf).__name__ == architecture
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


@pytest.mark.parametrize("which", ["baseline_run", "tiny_run"])
def test_bf16_export_loads(which, request, tmp_path):
    from transformers import AutoModelForCausalLM

    from jepa_core.model.hf import read_hf_model

    out = tmp_path / "hf"
    r = _export(request.getfixturevalue(which), out, dtype="bfloat16")
    hf = AutoModelForCausalLM.from_pretrained(out, torch_dtype="auto", trust_remote_code=r.architecture != "LlamaForCausalLM")
    assert hf.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(hf(input_ids=torch.tensor([[1, 2, 3]])).logits).all()
    assert "BF16 weights read as float32" in read_hf_model(out).notes


@pytest.mark.parametrize("which", ["tiny_run", "tiny_baseline_run", "tied_jepa_run"])
def test_shipped_profiles_export_as_jepa_lm_and_match(which, request, tmp_path):
    """`tiny` and `tiny-baseline` as shipped (and a tied head): a learned logit bias (and the bridge) make it a JepaForCausalLM."""
    run = request.getfixturevalue(which)
    out = tmp_path / "hf"
    r = _export(run, out)
    assert r.architecture == "JepaForCausalLM" and "modeling_jepa.py" in r.files
    why = r.notes[0]
    assert why.startswith("JepaForCausalLM") and "trust_remote_code=True" in why and "model.logit_bias" in why
    assert ("model.lm_bridge" in why) is (which != "tiny_baseline_run")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["JepaForCausalLM"] and config["logit_bias"] is True
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_jepa.JepaForCausalLM"
    assert config["bridge_layer"] == (None if which == "tiny_baseline_run" else 1)  # tap_layer -1 of 2 layers
    assert config["tie_word_embeddings"] is (which == "tied_jepa_run")
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match="trust_remote_code"):  # transformers asks before running the file
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    _check_matches(run, out, "JepaForCausalLM")


def test_jepa_lm_generates_with_its_cache_and_with_padding(tiny_run, tmp_path):
    """generate feeds one new token a step against the cache; a left-padded batch gives each row's own continuation."""
    from transformers import AutoModelForCausalLM

    from jepa_core.tools.sample import load_for_sampling

    out = tmp_path / "hf"
    _export(tiny_run, out)
    sm = load_for_sampling(tiny_run, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    lengths: list[int] = []
    hf.model.register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    eos, pad = sm.tokenizer.eos_id, sm.tokenizer.pad_id

    def upto_eos(tokens: list[int]) -> list[int]:  # transformers stops a row at <eos> (and pads it); jepa does not
        return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens

    a, b = sm.tokenizer.encode("ROMEO:"), sm.tokenizer.encode("JULIET:\nO Romeo, Romeo")
    n = 10
    want_a = upto_eos(sm.model.generate(torch.tensor([a]), n, temperature=0)[0, len(a) :].tolist())
    want_b = upto_eos(sm.model.generate(torch.tensor([b]), n, temperature=0)[0, len(b) :].tolist())
    kw = {"max_new_tokens": n, "do_sample": False, "pad_token_id": pad}
    with torch.no_grad():
        got = hf.generate(torch.tensor([a]), attention_mask=torch.ones(1, len(a), dtype=torch.long), **kw)[0, len(a) :].tolist()
        assert len(want_a) >= 5 and got == want_a and lengths == [len(a)] + [1] * (len(got) - 1)  # the prompt once, then one token a step
        no_cache = hf.generate(torch.tensor([a]), use_cache=False, **kw)[0, len(a) :].tolist()
        assert no_cache == want_a
        left = len(b) - len(a)
        ids = torch.tensor([[pad] * left + a, b])
        mask = torch.tensor([[0] * left + [1] * len(a), [1] * len(b)])
        both = hf.generate(ids, attention_mask=mask, **kw)[:, len(b) :].tolist()
        # the padded row's logits are its own: the padding is masked out (RoPE sees only offsets)
        padded = hf(input_ids=ids, attention_mask=mask).logits[0, left:]
        alone = hf(input_ids=torch.tensor([a])).logits[0]
    assert left > 0 and (padded - alone).abs().max().item() < 1e-4
    assert [upto_eos(row) for row in both] == [want_a, want_b]


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


def test_cli_says_which_architecture_and_why(tiny_run, jepa_run, tmp_path, cli):
    out = tmp_path / "hf"
    r = cli("export", str(tiny_run), str(out))
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "as JepaForCausalLM" in said and "model.lm_bridge" in said and "model.logit_bias" in said
    assert "trust_remote_code=True" in said and "--set model.lm_bridge=false" in said and "modeling_jepa.py" in said
    # over it, without --force: refused, naming the files; with it, a Llama export leaves no modeling file behind
    (out / "config.json").unlink()
    again = cli("export", str(jepa_run), str(out))
    assert again.returncode == 2 and "modeling_jepa.py" in again.stderr and "--force" in again.stderr
    r = cli("export", str(jepa_run), str(out), "--force")
    assert r.returncode == 0 and "as LlamaForCausalLM" in " ".join(r.stdout.split())
    assert not (out / "modeling_jepa.py").exists() and "trust_remote_code" not in r.stdout


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


@pytest.mark.parametrize("which", ["tiny_run", "tiny_baseline_run", "tied_jepa_run"])
def test_jepa_lm_export_reads_back_exactly_as_data(which, request, tmp_path):
    """The JepaForCausalLM kind read back: every LM tensor bit-exact (nothing folded), its code never run."""
    from jepa_core.model.hf import JEPA, read_hf_model
    from jepa_core.tools.sample import load_for_sampling

    from hf_helpers import jepa_model_from

    run = request.getfixturevalue(which)
    out = tmp_path / "hf"
    _export(run, out)
    marker = tmp_path / "code-ran"
    with open(out / "modeling_jepa.py", "a") as f:  # were the file imported, this would show
        f.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    sm = load_for_sampling(run, "cpu")
    src = sm.model.state_dict()
    hfm = read_hf_model(out)
    assert not marker.exists()
    assert hfm.architecture == JEPA and hfm.run_baseline is (which == "tiny_baseline_run")
    m = sm.cfg.model
    assert hfm.model == {k: getattr(m, k) for k in hfm.model}
    assert hfm.model["logit_bias"] is True and hfm.model.get("lm_bridge", False) is (which != "tiny_baseline_run")
    if which != "tiny_baseline_run":
        assert hfm.model["tap_layer"] == m.tap_layer == -1  # the run's own spelling of the tap
    lm = {n: t for n, t in src.items() if n.startswith("transformer.") and not n.startswith("transformer.tap_norm.")}
    assert hfm.tensors.keys() == lm.keys()
    assert all(torch.equal(hfm.tensors[n], lm[n]) for n in lm)
    ours = jepa_model_from(hfm, sm.block_size)
    ids = torch.randint(0, sm.tokenizer.vocab_size, (2, sm.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.lm_logits(ids), sm.model.lm_logits(ids))
