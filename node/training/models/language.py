"""Causal language models from a ``transformers`` GPT-2 config sized by the job: random-initialised, never downloaded.

This module is the one place that makes the Hugging Face libraries offline (``HF_HUB_OFFLINE=1``,
``TRANSFORMERS_OFFLINE=1``), before ``transformers`` is first imported: a node never fetches weights, configs or
code from a hub, and a spec names no hub repository. ``transformers`` is imported on first build (it takes seconds).

Determinism: every dropout probability is 0 (the registry refuses a model with an active dropout), attention is
the plain ``eager`` implementation (no fused kernel chosen at run time), and the output head is untied from the
token embedding so that every tensor of the state is its own (a tied pair would travel and be averaged twice).
"""

from __future__ import annotations

import os
from functools import cache

import torch
from torch import nn

from node.training.errors import TrainingError
from protocols.specs import ModelConfig

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def untie_saved_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A GPT-2 state as ``transformers`` saves a tied model (``save_pretrained`` leaves out ``lm_head.weight``, the
    token embedding's twin) made whole for the untied ``gpt2-lm-v1``: the head starts as a copy of the embedding."""
    if "lm_head.weight" not in state and "transformer.wte.weight" in state:
        return {**state, "lm_head.weight": state["transformer.wte.weight"].clone()}
    return state


def gpt2_parameters(config: ModelConfig) -> int:
    """The parameter count of ``gpt2-lm-v1`` for ``config``, computed without building it (to refuse absurd sizes)."""
    w = config.width
    per_block = 12 * w * w + 13 * w  # two layer norms, qkv, attention projection, 4x MLP
    return 2 * config.vocab * w + config.context * w + config.layers * per_block + 2 * w


@cache
def _logits_model_class() -> type[nn.Module]:
    from transformers import GPT2LMHeadModel

    class GPT2Logits(GPT2LMHeadModel):  # type: ignore[misc,no-untyped-call]
        """GPT-2 whose forward maps token ids ``N×T`` (int64) to next-token logits ``N×T×vocab``: one tensor,
        like every other model of the registry, and no key-value cache."""

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            logits: torch.Tensor = super().forward(input_ids=input_ids, use_cache=False, return_dict=True).logits
            return logits

    return GPT2Logits


def sample_tokens(model: nn.Module, prompt: list[int], new_tokens: int, *, context: int, temperature: float = 1.0,
                  seed: int = 0) -> list[int]:
    """``prompt`` followed by ``new_tokens`` ids drawn one at a time from a causal LM of this registry (the last
    ``context`` ids are its window). ``temperature`` 0 picks the most likely id; otherwise ids are drawn from
    ``softmax(logits / temperature)`` with a generator seeded by ``seed``, so the same call gives the same text."""
    if not prompt:
        raise TrainingError("sample_tokens: the prompt needs at least one token")
    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt)
    model.eval()
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids[-context:]], dtype=torch.int64))[0, -1].to(torch.float64)
            if temperature <= 0:
                ids.append(int(logits.argmax()))
            else:
                probs = torch.softmax(logits / temperature, dim=0)
                ids.append(int(torch.multinomial(probs, 1, generator=generator)))
    return ids


def gpt2_lm_v1(config: ModelConfig) -> nn.Module:
    """GPT-2 (pre-norm blocks, GELU MLP 4× wide, learned positions) with the spec's layers, width, heads, context
    and vocabulary; token ids ``0..vocab-1`` in, logits out."""
    sizes = {"layers": config.layers, "width": config.width, "heads": config.heads, "context": config.context,
             "vocab": config.vocab}
    missing = [name for name, value in sizes.items() if value <= 0]
    if missing:
        raise TrainingError(f"model gpt2-lm-v1: set model_config.{', model_config.'.join(missing)} in the job spec")
    if config.width % config.heads:
        raise TrainingError(f"model gpt2-lm-v1: model_config.width {config.width} is not a multiple of "
                            f"model_config.heads {config.heads}")
    from transformers import GPT2Config

    hf_config = GPT2Config(
        vocab_size=config.vocab, n_positions=config.context, n_embd=config.width, n_layer=config.layers,
        n_head=config.heads, n_inner=None, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, initializer_range=0.02, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, use_cache=False,
    )
    hf_config._attn_implementation = "eager"
    model: nn.Module = _logits_model_class()(hf_config)
    return model
