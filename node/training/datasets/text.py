"""Text corpora: a UTF-8 file, or every file under a folder (sorted by path; hidden ones and links skipped),
tokenised and cut into samples of ``context_length + 1`` ids.

The files' token streams are concatenated in path order; sample ``i`` is ids ``[i·L, i·L + L + 1)`` of the stream
(L the context length), so consecutive samples share one id and every id but the first is a target once. The tail
shorter than a sample is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.training.data import ArraySet
from node.training.datasets.source import LoadedDataset
from node.training.datasets.tokenizer import Tokenizer
from node.training.errors import DatasetError
from storage.dataset import DatasetInfo


def corpus_files(path: Path) -> list[Path]:
    """The corpus's files: ``path`` itself, or the regular files under it (symbolic links skipped: Debian's
    ``GPL -> GPL-3`` would put the same text in training and held-out samples)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DatasetError(f"{path}: empty folder (no text files)")
    return files


def read_text(path: Path) -> str:
    """A file's text, strictly UTF-8 (the error names the file and the byte offset)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def windows(stream: np.ndarray, context_length: int) -> np.ndarray:
    """Samples of ``context_length + 1`` ids, consecutive ones overlapping by one id."""
    count = (stream.size - 1) // context_length
    starts = np.arange(count, dtype=np.int64)[:, None] * context_length
    out: np.ndarray = stream[starts + np.arange(context_length + 1, dtype=np.int64)[None, :]]
    return out


def load_corpus(path: Path, *, licence: str, context_length: int, tokenizer: str) -> LoadedDataset:
    """Read and tokenise the corpus; refuses non-UTF-8 files, an empty corpus, and one shorter than two samples."""
    files = corpus_files(path)
    texts = [read_text(p) for p in files]
    tok = Tokenizer.for_corpus(tokenizer, texts)
    ids: list[int] = []
    for file, text in zip(files, texts, strict=True):
        try:
            ids.extend(tok.encode(text))
        except DatasetError as exc:
            raise DatasetError(f"{file}: {exc}") from exc
    stream = np.asarray(ids, dtype=np.int64)
    if stream.size < 2 * context_length + 1:
        raise DatasetError(f"{path}: {stream.size} tokens, fewer than two samples of {context_length} + 1 (one to "
                           "train on and one to hold out); add text or lower --context-length")
    if int(stream.max()) >= tok.vocab_size:
        raise DatasetError(f"{path}: token id {int(stream.max())} beyond the tokenizer's vocabulary {tok.vocab_size}")
    samples = windows(stream.astype(np.int32), context_length)
    info = DatasetInfo(format="text", task="causal_lm", licence=licence, input_shape=(context_length + 1,),
                       input_dtype="int32", vocab_size=tok.vocab_size, tokenizer=tok.kind, alphabet=tok.alphabet)
    return LoadedDataset(ArraySet(samples, None), info, tokenizer_file=tok.json or None)
