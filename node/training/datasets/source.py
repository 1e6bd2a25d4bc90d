"""What ``dtnode dataset add`` was asked to read (:class:`SourceOptions`) and what came out (:class:`LoadedDataset`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.training.data import ArraySet, check_labels
from node.training.errors import DatasetError
from storage.dataset import FORMATS, DatasetInfo

NO_LICENCE = "not stated by the publisher"


@dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """How to read a dataset: its format and the settings that format takes (the others stay at their defaults)."""

    format: str = "idx"
    licence: str = ""
    image_size: tuple[int, int] | None = None
    """Image folders: resize every image to (height, width); None: all must have the first image's size."""
    context_length: int = 0
    """Text: tokens a sample feeds the model (each sample holds one more, the last target)."""
    tokenizer: str = ""
    """Text: ``bytes``, ``chars``, or the path of a ``tokenizers`` JSON file."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DatasetError(f"unknown dataset format {self.format!r}; expected one of {', '.join(FORMATS)}")
        if self.format == "text" and (self.context_length < 1 or not self.tokenizer):
            raise DatasetError("a text corpus needs --context-length N (>= 1) and --tokenizer bytes|chars|FILE.json")
        if self.format != "text" and (self.context_length or self.tokenizer):
            raise DatasetError("--context-length and --tokenizer are for --format text")
        if self.image_size is not None and (self.format != "image-folder" or min(self.image_size) < 1):
            raise DatasetError("--image-size HxW (both >= 1) is for --format image-folder")


@dataclass(frozen=True, eq=False)
class LoadedDataset:
    """Samples read from the customer's files, with their description; ``test`` is a split the files came with."""

    train: ArraySet
    info: DatasetInfo
    test: ArraySet | None = None
    tokenizer_file: bytes | None = None
    """The ``tokenizers`` JSON to publish beside the shards (its CID goes into the manifest)."""

    def __post_init__(self) -> None:
        if self.info.task == "classification":
            for name, part in (("training samples", self.train), ("test samples", self.test)):
                if part is not None:
                    check_labels(part, len(self.info.classes), what=name)


def load_dataset(path: Path, options: SourceOptions) -> LoadedDataset:
    """Read ``path`` in ``options.format``; raises :class:`DatasetError` naming the file and the problem."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    licence = options.licence or NO_LICENCE
    if options.format == "idx":
        from node.training.datasets.idx import load_idx_folder

        return load_idx_folder(path, licence=options.licence)
    if options.format == "image-folder":
        from node.training.datasets.images import load_image_folder

        return load_image_folder(path, licence=licence, size=options.image_size)
    if options.format == "tensors":
        from node.training.datasets.tensors import load_tensor_file

        return load_tensor_file(path, licence=licence)
    from node.training.datasets.text import load_corpus

    return load_corpus(path, licence=licence, context_length=options.context_length, tokenizer=options.tokenizer)


def class_names(count: int) -> tuple[str, ...]:
    """Names of ``count`` classes known only by their ids: "0", "1", ..."""
    return tuple(str(i) for i in range(count))
