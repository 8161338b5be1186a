"""`fttrace export --format hf`: a member as a transformers GPT-2 directory whose logits are fttrace's, with a
tokenizer for the task's vocabulary; a model GPT-2 cannot express is refused with one line."""
import json
import shutil

import jax
import numpy as np
import pytest

import fttrace
from fttrace.cli import main
from fttrace.engine.results import MANIFEST_FILE
from fttrace.engine.runner import run_study
from fttrace.errors import UserError
from fttrace.model.member import MemberModel
from fttrace.model.transformer import ModelConfig, init_params
from fttrace.tools import hf
from helpers import NO_EVALS, tiny_config

transformers = pytest.importorskip("transformers", reason="the Hugging Face export needs the [hf] extra")
torch = pytest.importorskip("torch", reason="transformers' GPT-2 runs on torch")


def hf_logits(directory, tokens) -> np.ndarray:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(str(directory), output_loading_info=True)
    assert not any(info.values()), info  # every weight is the export's: none missing, none unused
    with torch.no_grad():
        return model.eval()(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hf") / "run"
    run_study(tiny_config(NO_EVALS), workdir, quiet=True)
    return workdir


def test_a_trained_member_loads_in_transformers_with_its_logits_and_tokenizer(workdir, tmp_path, capsys):
    out = tmp_path / "ft0"
    assert main(["export", str(workdir), "ft0", "--format", "hf", "--out", str(out)]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    run = fttrace.open(workdir)
    tokens = run.heldout()["pt"][0][:16]
    model = run.model("ft0")
    np.testing.assert_allclose(hf_logits(out, tokens), model.logits(tokens), atol=1e-4, rtol=0)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["tie_word_embeddings"], config["activation_function"]) == (
        "gpt2", False, "gelu_new")
    assert (config["n_positions"], config["n_inner"], config["layer_norm_epsilon"]) == (
        model.cfg.max_len, model.cfg.mlp, 1e-6)
    # The tokenizer speaks the task's vocabulary: ids -> text -> the same ids.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    text = tokenizer.decode(tokens[0])
    assert text.startswith(("<counter> t", "<index> t")) and text.endswith("<ans>")
    assert tokenizer(text)["input_ids"] == tokens[0].tolist()
    assert len(tokenizer) == model.cfg.vocab_size
    # An older checkpoint of the member, exported into the same directory, gives that checkpoint's logits.
    first = run.steps("ft0")[0]
    assert main(["export", str(workdir), "ft0", "--format", "hf", "--out", str(out), "--step", str(first)]) == 0
    np.testing.assert_allclose(hf_logits(out, tokens), run.model("ft0", step=first).logits(tokens), atol=1e-4)
    assert json.loads((out / hf.MARK).read_text())["step"] == first
    # The .npz export stays the default format.
    assert main(["export", str(workdir), "ft0", "--out", str(tmp_path / "ft0.npz")]) == 0
    assert (tmp_path / "ft0.npz").stat().st_size > 0


@pytest.mark.parametrize("changes", [dict(use_bias=False), dict(activation="relu", n_heads=4)])
def test_models_without_biases_or_with_relu_map_exactly(changes, tmp_path):
    cfg = ModelConfig(**dict(dict(vocab_size=9, max_len=6, d_model=16, n_layers=2, n_heads=2, d_mlp=24), **changes))
    params = jax.tree.map(lambda x: np.asarray(x) * 3, init_params(cfg, jax.random.PRNGKey(0)))
    model = MemberModel(cfg, params, "m")
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 9))
    strings = [f"w{i}" for i in range(9)]
    hf.write_model(cfg, params, hf.word_tokenizer(strings), tmp_path, {}, {"member": "m"})
    np.testing.assert_allclose(hf_logits(tmp_path, tokens), model.logits(tokens), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("changes, reason", [
    (dict(layer_norm=False), "no LayerNorm"), (dict(head_dim=4), "heads are 2 x 4 wide"),
    (dict(causal=False), "not causal"), (dict(dtype="bfloat16"), "computes in bfloat16")])
def test_models_gpt2_cannot_express_are_refused(changes, reason, tmp_path):
    cfg = ModelConfig(vocab_size=9, max_len=6, d_model=16, n_heads=2, **changes)
    with pytest.raises(UserError, match=reason):
        hf.write_model(cfg, init_params(cfg, jax.random.PRNGKey(0)), None, tmp_path / "out", {}, {})
    assert not (tmp_path / "out").exists()


def test_a_member_without_layer_norm_is_refused_with_one_line(workdir, tmp_path, capsys):
    # The trained run, its manifest saying its models have no LayerNorm (as a Tracr layout's): the command reads the
    # model's config from there, so it meets a member without LayerNorm without training one.
    shutil.copytree(workdir, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())
    manifest["config"]["model"]["layer_norm"] = False
    (tmp_path / "run" / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not fttrace.open(tmp_path / "run").model("pt0").cfg.layer_norm
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "pt0", "--format", "hf", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: member pt0 cannot be exported as GPT-2: it has no "
                                               "LayerNorm")
    assert not (tmp_path / "out").exists()


def test_a_sentencepiece_tokenizer_encodes_as_fttrace_does(tmp_path):
    from fttrace.lm.tokenizer import train_tokenizer
    rng = np.random.default_rng(0)
    words = "once upon a time there was a little dog named Tim who liked to run 12 and 345 jump".split()
    texts = [" ".join(rng.choice(words, 12)) + "\n" + " ".join(rng.choice(words, 7)) for _ in range(200)]
    ours = train_tokenizer(texts, 64)
    (tmp_path / "spm.model").write_bytes(ours.model)
    hf.sentencepiece_tokenizer(tmp_path / "spm.model").save_pretrained(str(tmp_path / "tok"))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    for text in ["once upon a time  Tim ran 1234\nand jumped", "a little dog\n\nnamed  Tim", " he liked 5 "]:
        ids = ours.encode(text)
        assert theirs(text, add_special_tokens=False)["input_ids"] == ids
        assert theirs.decode(ids) == ours.decode(ids)


def test_transformer_lens_opens_an_export_with_its_hook_points(tmp_path):
    bridge = pytest.importorskip("transformer_lens.model_bridge", reason="TransformerLens is not installed")
    cfg = ModelConfig(vocab_size=9, max_len=6, d_model=16, n_layers=2, n_heads=2, d_mlp=24)
    params = jax.tree.map(lambda x: np.asarray(x) * 3, init_params(cfg, jax.random.PRNGKey(0)))
    hf.write_model(cfg, params, hf.word_tokenizer([f"w{i}" for i in range(9)]), tmp_path, {}, {"member": "m"})
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 9))
    logits, cache = bridge.TransformerBridge.boot_transformers(str(tmp_path), device="cpu").run_with_cache(
        torch.tensor(tokens))
    ours, captured = MemberModel(cfg, params, "m").run_with_cache(tokens)
    np.testing.assert_allclose(logits.detach().numpy(), ours, atol=1e-4)
    np.testing.assert_allclose(cache["blocks.1.attn.hook_pattern"].detach().numpy(), captured["blocks.1.attn.hook_pattern"],
                               atol=1e-5)
