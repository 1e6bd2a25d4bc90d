"""The devnet's demos (``dtnode devnet --task NAME``): what the customer brings (data, and for fine-tuning its own
checkpoint) and the job it posts, each with its own embedded defaults; the network and its code path are the same.

- ``fmnist`` (the default, ``make demo``): a CNN trained from the seed on Fashion-MNIST, accuracy per round.
- ``finetune``: the customer's checkpoint, pre-trained in one process on half of Fashion-MNIST's training images
  (:mod:`node.devnet.pretrain`), given to the job as ``dtnode job create --init`` gives it, and fine-tuned by the
  network on the other half transposed, which the checkpoint never saw. Target: 75% on the 10,000 test images
  (transposed) by round 3, which the same job started from the seed reaches only at round 4 (docs/BENCHMARKS.md).
- ``lm``: a 2-layer GPT-2 (width 64, 4 heads, context 64, bytes tokenizer) trained on Vim's reference manual as
  Debian installs it, perplexity per round, and text sampled from the final weights in the summary.

Pure description plus the customer's blocking data loading: nothing here starts a node or touches the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.devnet.plan import DevnetPlan, demo_spec
from node.devnet.pretrain import finetune_split, make_checkpoint, transposed
from node.roles.dataset_publish import fashion_mnist_loaded
from node.training.datasets.source import LoadedDataset, SourceOptions, load_dataset
from node.training.datasets.tokenizer import Tokenizer
from node.training.models import State, build_model, model_ref
from node.training.models.language import sample_tokens
from protocols.errors import ConfigError
from protocols.specs import JobSpec, ModelConfig
from storage.dataset import DatasetInfo

VIM_DOCS = Path("/usr/share/vim/vim90/doc")
VIM_DOCS_LICENCE = ("Vim reference manual (Debian vim-runtime, runtime/doc/*): Copyright 1988-2003 Bram Moolenaar, "
                    "Open Publication License v1.0 or later (OPL-1+, no options exercised)")
FALLBACK_CORPUS = Path("/usr/share/common-licenses")
FALLBACK_LICENCE = "Debian common-licenses: the licence texts, each verbatim-copying-only (no modified versions)"
LM_CONTEXT = 64
LM_PROMPT = "To open a new window "
"""The summary's sample starts from this text (bytes tokenizer: any UTF-8 prompt)."""
SAMPLE_TOKENS = 200
SAMPLE_TEMPERATURE = 0.8


@dataclass(frozen=True, kw_only=True)
class Demo:
    """One demo: its job's spec with the embedded defaults, the customer's dataset and (fine-tuning) weights."""

    name: str
    summary: str
    """One line, for ``dtnode devnet --help`` and the run's first output line."""
    trainers: int
    rounds: int
    make_spec: Callable[[int, int], JobSpec]
    """(tasks per round, rounds) → the job spec, before its dataset's CIDs are known."""
    load_data: Callable[[int], LoadedDataset]
    """The customer's dataset for a seed (blocking; call it in a thread)."""
    init_weights: Callable[[Path], bytes] | None = None
    """The customer's ``--init`` file, made in (or reused from) the given folder; None: weights from the seed."""
    shards: int = 16
    eval_samples: int = 2000

    def spec(self, *, trainers: int | None = None, rounds: int | None = None) -> JobSpec:
        return self.make_spec(self.trainers if trainers is None else trainers,
                              self.rounds if rounds is None else rounds)


# --- fine-tuning ---------------------------------------------------------------------------------------------------

FINETUNE_CHECKPOINT = "customer-pretrained.safetensors"


def finetune_spec(trainers: int, rounds: int) -> JobSpec:
    """The default demo's CNN job, shorter tasks (K = 20): the checkpoint's head start shows in the first rounds."""
    return replace(demo_spec(trainers=trainers, rounds=rounds, local_steps=20),
                   name="fashion-mnist-transposed-finetune")


def finetune_data(seed: int) -> LoadedDataset:
    """Fashion-MNIST transposed: the 30,000 training images the checkpoint did not see, and the 10,000 test images."""
    full = fashion_mnist_loaded(None)
    assert full.test is not None
    return replace(full, train=finetune_split(full.train), test=transposed(full.test))


def finetune_init(workdir: Path) -> bytes:
    """The customer's pre-trained checkpoint (:mod:`node.devnet.pretrain`): made once per work folder."""
    path = workdir / FINETUNE_CHECKPOINT
    return path.read_bytes() if path.exists() else make_checkpoint(path)


# --- language model ------------------------------------------------------------------------------------------------

LM_MODEL_CONFIG = ModelConfig(layers=2, width=64, heads=4, context=LM_CONTEXT, vocab=256)


def lm_spec(trainers: int, rounds: int) -> JobSpec:
    """GPT-2 of 137k parameters; 16 sequences of 64 bytes a step, K = 100, AdamW 3e-3 inner, DiLoCo outer."""
    return replace(demo_spec(trainers=trainers, rounds=rounds, local_steps=100), name="vim-docs-lm",
                   model="gpt2-lm-v1", model_config=LM_MODEL_CONFIG, task="causal_lm", batch_size=16,
                   inner_lr="0.003")


def lm_corpus() -> tuple[Path, str]:
    """The corpus folder and its licence note: Vim's manual, or Debian's licence texts where Vim's is absent."""
    if VIM_DOCS.is_dir():
        return VIM_DOCS, VIM_DOCS_LICENCE
    if FALLBACK_CORPUS.is_dir():
        return FALLBACK_CORPUS, FALLBACK_LICENCE
    raise ConfigError(f"devnet --task lm: neither {VIM_DOCS} (apt-get install vim-runtime) nor {FALLBACK_CORPUS} "
                      "is on this machine")


def lm_data(seed: int) -> LoadedDataset:
    """The corpus as ``dtnode dataset add CORPUS --format text --tokenizer bytes --context-length 64`` reads it."""
    corpus, licence = lm_corpus()
    return load_dataset(corpus, SourceOptions(format="text", licence=licence, context_length=LM_CONTEXT,
                                              tokenizer="bytes"))


def sample_text(spec: JobSpec, weights: State, info: DatasetInfo, *, prompt: str = LM_PROMPT,
                new_tokens: int = SAMPLE_TOKENS, seed: int = 0) -> str:
    """Text drawn from a causal LM job's weights (seeded: the same weights give the same text)."""
    tokenizer = Tokenizer.from_info(info)
    model = build_model(model_ref(spec))
    model.load_state_dict(dict(weights), strict=True)
    ids = sample_tokens(model, tokenizer.encode(prompt), new_tokens, context=spec.model_config.context,
                        temperature=SAMPLE_TEMPERATURE, seed=seed)
    return tokenizer.decode(ids)


# --- the registry of demos -----------------------------------------------------------------------------------------

DEMOS: dict[str, Demo] = {d.name: d for d in (
    Demo(name="fmnist", summary="a CNN trained from scratch on Fashion-MNIST (the default; make demo)",
         trainers=4, rounds=14, make_spec=lambda trainers, rounds: demo_spec(trainers=trainers, rounds=rounds),
         load_data=lambda seed: fashion_mnist_loaded(None)),
    Demo(name="finetune", summary="the customer's CNN pre-trained on upright Fashion-MNIST (--init), fine-tuned "
         "on other images, transposed", trainers=4, rounds=5, make_spec=finetune_spec, load_data=finetune_data,
         init_weights=finetune_init),
    Demo(name="lm", summary="a 2-layer GPT-2 on Vim's manual (bytes), perplexity per round, sampled text",
         trainers=4, rounds=6, make_spec=lm_spec, load_data=lm_data, eval_samples=500),
)}
DEFAULT_DEMO = "fmnist"


def get_demo(name: str) -> Demo:
    try:
        return DEMOS[name]
    except KeyError:
        raise ConfigError(f"devnet --task {name!r}: expected one of {', '.join(DEMOS)}") from None


def demo_plan(name: str, *, trainers: int | None = None, rounds: int | None = None, **settings: Any) -> DevnetPlan:
    """The devnet plan of demo ``name`` with its defaults (``trainers``, ``rounds``: overrides; ``settings``: any
    other :class:`DevnetPlan` field)."""
    demo = get_demo(name)
    trainers = demo.trainers if trainers is None else trainers
    return DevnetPlan(trainers=trainers, spec=demo.spec(trainers=trainers, rounds=rounds), demo=demo.name,
                      shards=demo.shards, eval_samples=demo.eval_samples, **settings)
