"""One member as a Hugging Face `transformers` GPT-2 model directory (`fttrace export WORKDIR MEMBER --format hf`).

fttrace's transformer is GPT-2's architecture: learned positions, pre-LayerNorm blocks, a final LayerNorm, GELU
with the tanh approximation (GPT-2's "gelu_new"), attention scaled by 1/sqrt(head size). The directory holds
config.json and model.safetensors of a GPT2LMHeadModel (untied unembedding, no lm_head bias: fttrace's has none;
absent biases are zeros, which GPT-2 always has), so `AutoModelForCausalLM.from_pretrained(DIR)` gives the member's
logits, and a tokenizer `AutoTokenizer.from_pretrained(DIR)` loads: a word-level one over the task's token strings
(PCFG: `<counter> t3 t1 ... <ans>`), or the SentencePiece model of a language-model study (stories, canary) as a
BPE tokenizer that encodes as SentencePiece does. A model GPT-2 cannot express is refused, saying why.
"""
from __future__ import annotations

import json

import numpy as np
from etils import epath

from fttrace.errors import UserError
from fttrace.model.transformer import ModelConfig

ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu"}  # fttrace's name -> GPT-2's (transformers' ACT2FN)
LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon, which the model keeps
MARK = "fttrace-export.json"  # the description beside the model: member, step, fttrace version


def refusal(cfg: ModelConfig) -> str | None:
    """Why GPT-2 cannot express the model (None when it can)."""
    if not cfg.layer_norm:
        return ("it has no LayerNorm (layer_norm=False, the layout of Tracr-compiled weights), and GPT-2 normalises "
                "before every block and at the end")
    if cfg.hd * cfg.n_heads != cfg.d_model:
        return (f"its heads are {cfg.n_heads} x {cfg.hd} wide, not d_model {cfg.d_model}; GPT-2's heads split "
                "d_model")
    if not cfg.causal:
        return "its attention is not causal, and GPT-2's always is"
    if cfg.activation not in ACTIVATIONS:
        return f"its activation {cfg.activation!r} is none of GPT-2's ({', '.join(ACTIVATIONS)})"
    if cfg.dtype != "float32":
        return (f"it computes in {cfg.dtype}: a float32 GPT-2 would not give its logits (export float32 members "
                "only)")
    return None


def gpt2_config(cfg: ModelConfig, special: dict) -> dict:
    """GPT2Config's arguments for `cfg`; `special` names the pad/bos/eos ids (None where the vocabulary has none)."""
    return dict(vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                n_head=cfg.n_heads, n_inner=cfg.mlp, activation_function=ACTIVATIONS[cfg.activation],
                layer_norm_epsilon=LAYER_NORM_EPS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                tie_word_embeddings=False, architectures=["GPT2LMHeadModel"],
                **dict(dict(pad_token_id=None, bos_token_id=None, eos_token_id=None), **special))


def gpt2_weights(cfg: ModelConfig, params) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's state dict (float32 numpy) holding fttrace parameters `params` of a model `cfg`.

    GPT-2's Conv1D weights are [in, out], as flax's kernels; its c_attn is query, key and value side by side, each
    [d_model, heads x head size] in head-major order, as flax's [d_model, heads, head size] kernels flatten."""
    reason = refusal(cfg)
    if reason:
        raise UserError(f"cannot export this model as GPT-2: {reason}")
    d = cfg.d_model
    f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    bias = lambda layer, size: f32(layer["bias"]).reshape(size) if "bias" in layer else np.zeros(size, np.float32)  # noqa: E731
    out = {"transformer.wte.weight": f32(params["embed"]["embedding"]),
           "transformer.wpe.weight": f32(params["pos_embed"]),
           "transformer.ln_f.weight": f32(params["ln_f"]["scale"]), "transformer.ln_f.bias": f32(params["ln_f"]["bias"]),
           "lm_head.weight": f32(params["unembed"]["kernel"]).T.copy()}
    for i in range(cfg.n_layers):
        block, at = params[f"block_{i}"], f"transformer.h.{i}."
        attn, mlp = block["attn"], block["mlp"]
        for ln, name in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[at + f"{name}.weight"], out[at + f"{name}.bias"] = f32(block[ln]["scale"]), f32(block[ln]["bias"])
        out[at + "attn.c_attn.weight"] = np.concatenate([f32(attn[p]["kernel"]).reshape(d, d)
                                                         for p in ("query", "key", "value")], axis=1)
        out[at + "attn.c_attn.bias"] = np.concatenate([bias(attn[p], d) for p in ("query", "key", "value")])
        out[at + "attn.c_proj.weight"], out[at + "attn.c_proj.bias"] = f32(attn["out"]["kernel"]).reshape(d, d), \
            bias(attn["out"], d)
        out[at + "mlp.c_fc.weight"], out[at + "mlp.c_fc.bias"] = f32(mlp["fc_in"]["kernel"]), bias(mlp["fc_in"],
                                                                                                   cfg.mlp)
        out[at + "mlp.c_proj.weight"], out[at + "mlp.c_proj.bias"] = f32(mlp["fc_out"]["kernel"]), bias(mlp["fc_out"],
                                                                                                        d)
    return out


def word_tokenizer(strings):
    """A PreTrainedTokenizerFast whose id i is the word strings[i] (tokens separated by spaces); any other word is
    id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {s: i for i, s in enumerate(strings)}
    if len(vocab) != len(strings) or any(not s or s.split() != [s] for s in strings):
        raise ValueError("token strings must be distinct single words")
    # A word not in `strings` reads as the first token (PCFG's <pad>): TransformerLens probes with arbitrary text.
    backend = Tokenizer(models.WordLevel(vocab, unk_token=strings[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=strings[0],
                                   pad_token="<pad>" if "<pad>" in vocab else None)


def sentencepiece_tokenizer(model_file):
    """A PreTrainedTokenizerFast that encodes and decodes as the fttrace SentencePiece model at `model_file`
    (fttrace/lm/tokenizer.py: BPE, identity normalisation, whitespace kept, no dummy prefix, digits split, `\\n` a
    piece of its own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor
    from fttrace.lm.tokenizer import BOS, EOS, PAD, UNK
    extracted = SentencePieceExtractor(str(model_file)).extract(None)
    vocab, pieces = extracted["vocab"], {i: p for p, i in extracted["vocab"].items()}
    byte_fallback = "<0x00>" in vocab
    backend = Tokenizer(models.BPE(vocab, extracted["merges"], unk_token=pieces[UNK], fuse_unk=True,
                                   byte_fallback=byte_fallback))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True),
        pre_tokenizers.Digits(individual_digits=True)])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_tokens([t for t in extracted["additional_special_tokens"] if not t.special])  # "\n"
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pieces[PAD], unk_token=pieces[UNK],
                                   bos_token=pieces[BOS], eos_token=pieces[EOS])


def write_model(cfg: ModelConfig, params, tokenizer, out, special: dict, description: dict) -> epath.Path:
    """Write the GPT-2 directory `out`: config.json, model.safetensors, the tokenizer's files and MARK."""
    from safetensors.numpy import save_file
    from transformers import GPT2Config
    weights = gpt2_weights(cfg, params)  # refuses before anything is written
    out = epath.Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise UserError(f"{out} holds files an export did not write; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    GPT2Config(**gpt2_config(cfg, special)).save_pretrained(str(out))
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    (out / MARK).write_text(json.dumps(description, indent=2, default=str) + "\n")
    return out


def export_member(run, member, out, step: int | None = None) -> epath.Path:
    """Write `member` of the opened workdir `run` (fttrace.open) as a GPT-2 directory `out`, with its tokenizer."""
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("a Hugging Face export needs transformers and safetensors: pip install 'fttrace[hf]'") from None
    from fttrace.version import __version__
    model = run.model(member, step)
    reason = refusal(model.cfg)
    if reason:
        raise UserError(f"member {model.member} cannot be exported as GPT-2: {reason}")
    if run.config.get("study") is not None:  # a language-model study: its SentencePiece model
        from fttrace.lm.tokenizer import BOS, EOS, PAD
        model_file = run.tokenizer_path
        tokenizer, special = sentencepiece_tokenizer(model_file), dict(pad_token_id=PAD, bos_token_id=BOS,
                                                                      eos_token_id=EOS)
    else:
        vocab = getattr(run.task, "vocab", None)
        if vocab is None:
            raise UserError(f"{run.study} tasks have no token strings to export a tokenizer with")
        tokenizer, special = word_tokenizer(vocab.strings), dict(pad_token_id=vocab.PAD, bos_token_id=None,
                                                                eos_token_id=None)
    steps = run.steps(model.member)
    description = dict(member=model.member, step=step if step is not None else (steps[-1] if steps else None),
                       workdir=str(run.workdir), fttrace=__version__,
                       info=model.info)
    return write_model(model.cfg, model.params, tokenizer, out, special, description)
