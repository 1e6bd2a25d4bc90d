"""Tokenizers for text corpora: ``bytes`` (the UTF-8 bytes, 256 ids), ``chars`` (the corpus's distinct characters,
sorted, one id each) and a Hugging Face ``tokenizers`` JSON file (data, not code: a vocabulary and merge rules).

The same tokenizer turns sampled ids back into text (:meth:`Tokenizer.decode`), built from a manifest's description
(and, for a JSON tokenizer, the file fetched by its CID).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from node.training.errors import DatasetError
from storage.dataset import DatasetInfo

BUILT_IN = ("bytes", "chars")


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """One of the three kinds; ``kind`` is what the manifest records."""

    kind: str
    alphabet: str = ""
    json: bytes = b""
    _hf: HFTokenizer | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: bytes, *, what: str) -> Tokenizer:
        """A ``tokenizers`` JSON file's tokenizer; ``what`` names the file in errors."""
        try:
            hf = HFTokenizer.from_str(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{what}: tokenizer file is not UTF-8 ({exc})") from exc
        except Exception as exc:  # the Rust library raises plain Exception for every malformed file
            raise DatasetError(f"{what}: not a tokenizers JSON file ({exc})") from exc
        return cls("tokenizers-json", json=data, _hf=hf)

    @classmethod
    def for_corpus(cls, name: str, texts: Sequence[str]) -> Tokenizer:
        """``bytes``, ``chars`` (alphabet from ``texts``), or the path of a JSON file."""
        if name == "bytes":
            return cls("bytes")
        if name == "chars":
            return cls("chars", alphabet="".join(sorted(set().union(*map(set, texts)))))
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"tokenizer {name!r}: neither bytes, chars, nor a readable JSON file ({exc})") from exc
        return cls.from_json(data, what=str(path))

    @classmethod
    def from_info(cls, info: DatasetInfo, json_file: bytes = b"") -> Tokenizer:
        """The tokenizer a corpus manifest describes (``json_file``: the file at ``info.tokenizer_cid``)."""
        if info.tokenizer == "tokenizers-json":
            return cls.from_json(json_file, what=f"tokenizer {info.tokenizer_cid}")
        if info.tokenizer not in BUILT_IN:
            raise DatasetError(f"dataset {info.format} has no tokenizer")
        return cls(info.tokenizer, alphabet=info.alphabet)

    @property
    def vocab_size(self) -> int:
        if self._hf is not None:
            return int(self._hf.get_vocab_size(with_added_tokens=True))
        return 256 if self.kind == "bytes" else len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        index = {c: i for i, c in enumerate(self.alphabet)}
        try:
            return [index[c] for c in text]
        except KeyError as exc:
            raise DatasetError(f"character {exc.args[0]!r} is not in the chars tokenizer's alphabet") from None

    def decode(self, ids: Sequence[int]) -> str:
        if self._hf is not None:
            return str(self._hf.decode(list(ids), skip_special_tokens=False))
        if self.kind == "bytes":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.alphabet[i] for i in ids)
