"""Tiny transformers built from configs, trained for a moment on a synthetic task, saved as folders.

Four families: an OPT-style ReLU decoder, a BERT-style GELU encoder, a LLaMA-style SiLU-gated
MLP and GPT-2 (GELU's tanh form spelled out in torch ops), hidden size 32, 2 layers, with a
word-level tokenizer built here with the ``tokenizers`` library and saved into the folder. A few FFN neurons are killed on purpose
(their bias set far below any threshold) so that dead counts are not all zero, and a few
others are fed a large bias so that they fire on every token.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

WORDS = [f"w{i}" for i in range(24)]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[CLS]", "[SEP]"]
VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS)}
HIDDEN, FFN, LAYERS = 32, 64, 2
KILLED = {0: [3, 17, 40], 1: [5, 6]}  # layer -> FFN neurons given a bias of -50


def tokenizer(folder: Path, template: str) -> Any:
    """A word-level tokenizer; ``template`` like ``[BOS] $A`` or ``[CLS] $A [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [t for t in SPECIALS if t in template]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, VOCAB[t]) for t in specials]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def prompts(n: int, seed: int, lo: int = 3, hi: int = 12) -> list[str]:
    """Counting sequences ``w3 w4 w5 …`` of random start and length (lengths differ: padding would matter)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, length = rng.randrange(len(WORDS)), rng.randrange(lo, hi)
        out.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(length)))
    return out


def _train(model: Any, tok: Any, steps: int, causal: bool) -> None:
    """A few Adam steps of next-word (decoder) or first-word (encoder) prediction, batch size 1."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i, text in enumerate(prompts(steps, seed=100)):
        ids = torch.tensor([tok.encode(text).ids])
        if causal:
            loss = model(input_ids=ids, labels=ids).loss
        else:
            label = torch.tensor([(ids[0, 1].item() - len(SPECIALS)) % 2])
            loss = model(input_ids=ids, labels=label).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i + 1 >= steps:
            break
    model.eval()


def _kill(bias_of: Any) -> None:
    with torch.no_grad():
        for layer, units in KILLED.items():
            bias_of(layer)[units] = -50.0


def opt(folder: Path, steps: int = 40, **save: Any) -> Any:
    from transformers import OPTConfig, OPTForCausalLM

    tok = tokenizer(folder, "[BOS] $A")
    torch.manual_seed(1)
    cfg = OPTConfig(
        vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=LAYERS, ffn_dim=FFN,
        num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=HIDDEN,
        pad_token_id=0, bos_token_id=2, eos_token_id=4, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    model = OPTForCausalLM(cfg)
    _train(model, tok, steps, causal=True)
    _kill(lambda i: model.model.decoder.layers[i].fc1.bias)
    model.save_pretrained(folder, **save)
    return model


def bert(folder: Path, steps: int = 40, hidden_act: str = "gelu", **save: Any) -> Any:
    """BERT; ``hidden_act="gelu_python"`` spells GELU's erf form out in torch ops (the original BERT code)."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = tokenizer(folder, "[CLS] $A [SEP]")
    torch.manual_seed(2)
    cfg = BertConfig(
        vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=FFN,
        num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, hidden_act=hidden_act,
    )  # fmt: skip
    model = BertForSequenceClassification(cfg)
    _train(model, tok, steps, causal=False)
    _kill(lambda i: model.bert.encoder.layer[i].intermediate.dense.bias)
    model.save_pretrained(folder, **save)
    return model


def llama(folder: Path, steps: int = 40, **save: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(folder, "[BOS] $A")
    torch.manual_seed(3)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, mlp_bias=True,
        pad_token_id=0, bos_token_id=2, eos_token_id=4,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    _train(model, tok, steps, causal=True)
    _kill(lambda i: model.model.layers[i].mlp.gate_proj.bias)
    model.save_pretrained(folder, **save)
    return model


def gpt2(folder: Path, steps: int = 40, **save: Any) -> Any:
    """GPT-2: its MLP's ``NewGELUActivation`` spells GELU's tanh form out in torch ops (``gelu_new``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer(folder, "[BOS] $A")
    torch.manual_seed(4)
    cfg = GPT2Config(
        vocab_size=len(VOCAB), n_embd=HIDDEN, n_layer=LAYERS, n_inner=FFN, n_head=4, n_positions=64,
        activation_function="gelu_new", pad_token_id=0, bos_token_id=2, eos_token_id=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    _train(model, tok, steps, causal=True)
    _kill(lambda i: model.transformer.h[i].mlp.c_fc.bias)
    model.save_pretrained(folder, **save)
    return model
