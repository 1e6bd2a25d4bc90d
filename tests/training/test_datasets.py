"""`dtnode dataset add` for every format, from real files in tmp_path: add -> manifest -> shards -> decoded samples
equal to what the files hold; and every malformed input refused with an error naming the file and the problem."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from node.roles.dataset_publish import PublishedData, publish_files
from node.training.data import ArraySet, decode_shard
from node.training.datasets.source import SourceOptions, load_dataset
from node.training.datasets.tokenizer import Tokenizer
from node.training.errors import DatasetError
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from storage.dataset import DatasetManifest


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    data = header + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


async def add(tmp_path: Path, source: Path, options: SourceOptions, *, shards: int = 1,
              eval_samples: int = 2000) -> tuple[PublishedData, DatasetManifest, list[ArraySet], ArraySet, bytes]:
    """Publish into a real block store, then read everything back by CID as a trainer would."""
    store = LocalContentStore(FilesystemBlockStore(tmp_path / "blocks", max_bytes=1 << 30))
    data = await publish_files(store, source, options, shards=shards, eval_samples=eval_samples)
    manifest = DatasetManifest.from_bytes(await store.get(data.dataset_cid, max_bytes=1 << 20, timeout_s=5))
    parts = [decode_shard(await store.get(s.cid, max_bytes=1 << 26, timeout_s=5)) for s in manifest.shards]
    held_out = decode_shard(await store.get(data.eval_cid, max_bytes=1 << 26, timeout_s=5))
    tokenizer = b""
    if manifest.info.tokenizer_cid:
        tokenizer = await store.get(manifest.info.tokenizer_cid, max_bytes=1 << 20, timeout_s=5)
    assert [len(p) for p in parts] == [s.samples for s in manifest.shards]
    return data, manifest, parts, held_out, tokenizer


def same(a: ArraySet, b: ArraySet) -> bool:
    labels_equal = (a.labels is None and b.labels is None) or (
        a.labels is not None and b.labels is not None and np.array_equal(a.labels, b.labels))
    return a.inputs.dtype == b.inputs.dtype and np.array_equal(a.inputs, b.inputs) and labels_equal


# --- IDX -----------------------------------------------------------------------------------------------------------

async def test_idx_any_shape_and_classes_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_x, train_y = rng.integers(0, 256, (30, 5, 4)), rng.integers(0, 3, 30)
    test_x, test_y = rng.integers(0, 256, (6, 5, 4)), rng.integers(0, 3, 6)
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", train_x)
    write_idx(folder / "train-labels-idx1-ubyte", train_y)
    write_idx(folder / "test-images-idx3-ubyte", test_x)
    write_idx(folder / "test-labels-idx1-ubyte.gz", test_y)
    data, manifest, (shard,), held_out, _ = await add(tmp_path, folder, SourceOptions(format="idx"), eval_samples=4)
    info = manifest.info
    assert (info.format, info.task, info.input_shape, info.input_dtype) == ("idx", "classification", (5, 4), "uint8")
    assert info.classes == ("0", "1", "2") and info.licence == "not stated by the publisher"
    assert same(shard, ArraySet(train_x.astype(np.uint8), train_y.astype(np.uint8)))
    assert same(held_out, ArraySet(test_x[:4].astype(np.uint8), test_y[:4].astype(np.uint8)))
    assert (data.train_samples, data.eval_samples) == (30, 4)


async def test_idx_float_images_without_test_split_hold_some_out(tmp_path: Path) -> None:
    x = np.arange(20 * 3, dtype=np.float32).reshape(20, 3) / 7
    y = np.arange(20) % 4
    write_idx(tmp_path / "train-images-idx2-ubyte", x, code=0x0D)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y, code=0x0C)
    _, manifest, parts, held_out, _ = await add(tmp_path, tmp_path, SourceOptions(format="idx", licence="CC0"),
                                                shards=2)
    assert manifest.info.input_dtype == "float32" and manifest.info.licence == "CC0" and len(held_out) == 2
    every = np.concatenate([p.inputs for p in [*parts, held_out]])
    assert sorted(map(tuple, every.tolist())) == sorted(map(tuple, x.tolist()))


def test_idx_fashion_mnist_is_recognised(fmnist: tuple[ArraySet, ArraySet]) -> None:
    from node.training.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR

    loaded = load_dataset(FASHION_MNIST_DIR, SourceOptions(format="idx"))
    assert loaded.info.classes == FASHION_MNIST_CLASSES and "Zalando" in loaded.info.licence
    assert loaded.test is not None and same(loaded.train, fmnist[0]) and same(loaded.test, fmnist[1])


def test_idx_malformed_names_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 2, 2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte holds 4 samples but .*labels-idx1-ubyte holds 3"):
        load_dataset(tmp_path, SourceOptions())
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4, 2)))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte: labels must be one id per sample"):
        load_dataset(tmp_path, SourceOptions())
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="train images file without its labels"):
        load_dataset(tmp_path, SourceOptions())
    with pytest.raises(DatasetError, match="no train-images"):
        load_dataset(_empty(tmp_path), SourceOptions())


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# --- image folders -------------------------------------------------------------------------------------------------

def make_images(root: Path, *, size: tuple[int, int] = (6, 5), mode: str = "L") -> dict[str, list[np.ndarray]]:
    """Two classes of PNGs (lossless, so decoded pixels can be compared) and one JPEG."""
    rng = np.random.default_rng(1)
    written: dict[str, list[np.ndarray]] = {}
    for cls, count in (("cat", 3), ("dog", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            pixels = rng.integers(0, 256, shape).astype(np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / cls / f"{i}.png")
            written.setdefault(cls, []).append(pixels)
    return written


async def test_image_folder_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "images"
    written = make_images(root)
    _, manifest, (shard,), _, _ = await add(tmp_path, root, SourceOptions(format="image-folder"))
    info = manifest.info
    assert info.classes == ("cat", "dog") and info.input_shape == (1, 5, 6) and info.input_dtype == "uint8"
    loaded = load_dataset(root, SourceOptions(format="image-folder"))
    expected = np.stack([p[None] for cls in ("cat", "dog") for p in written[cls]])
    assert np.array_equal(loaded.train.inputs, expected)
    assert loaded.train.labels is not None and loaded.train.labels.tolist() == [0, 0, 0, 1, 1]
    # The shard is the loaded set minus the held-out sample, in order.
    assert len(shard) == 4 and all(any(np.array_equal(s, e) for e in expected) for s in shard.inputs)


def test_image_folder_colour_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "images"
    written = make_images(root, mode="RGB")
    Image.new("L", (6, 5), 7).save(root / "dog" / "grey.jpg")  # one greyscale JPEG among colour images
    loaded = load_dataset(root, SourceOptions(format="image-folder"))
    assert loaded.train.inputs.shape == (6, 3, 5, 6)
    assert np.array_equal(loaded.train.inputs[0], np.moveaxis(written["cat"][0], 2, 0))
    Image.new("RGB", (9, 9)).save(root / "dog" / "big.png")
    resized = load_dataset(root, SourceOptions(format="image-folder", image_size=(4, 3)))
    assert resized.train.inputs.shape == (7, 3, 4, 3)


@pytest.mark.parametrize("damage, problem", [
    (lambda root: (root / "cat" / "bad.png").write_bytes(b"\x89PNG not really"), r"cat/bad.png: bad image"),
    (lambda root: Image.new("L", (7, 5)).save(root / "dog" / "wide.png"),
     r"dog/wide.png: image is 7x5 but the first image is 6x5"),
    (lambda root: Image.new("L", (6, 5)).save(root / "dog" / "anim.png", format="GIF"),
     r"dog/anim.png: a GIF image; only PNG and JPEG"),
    (lambda root: (root / "dog" / "notes.txt").write_text("hi"), r"dog/notes.txt: not a .png/.jpg/.jpeg"),
    (lambda root: (root / "bird").mkdir(), r"bird: empty class folder"),
    (lambda root: (root / "stray.png").write_bytes(b""), r"files outside a class sub-folder \(stray.png\)"),
])
def test_image_folder_malformed_names_the_file(tmp_path: Path, damage: object, problem: str) -> None:
    root = tmp_path / "images"
    make_images(root)
    damage(root)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=problem):
        load_dataset(root, SourceOptions(format="image-folder"))


def test_image_folder_needs_two_classes(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="found 0 class sub-folder"):
        load_dataset(_empty(tmp_path), SourceOptions(format="image-folder"))


# --- tensor files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
async def test_tensor_file_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(2)
    arrays = {"inputs": rng.standard_normal((12, 3, 2)).astype(np.float64), "labels": np.arange(12) % 3,
              "test_inputs": rng.standard_normal((5, 3, 2)), "test_labels": np.array([2, 1, 0, 0, 1])}
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        save_file(arrays, str(path))
    _, manifest, (shard,), held_out, _ = await add(tmp_path, path, SourceOptions(format="tensors", licence="mine"))
    info = manifest.info
    assert (info.format, info.input_shape, info.input_dtype, info.classes) == ("tensors", (3, 2), "float32",
                                                                                ("0", "1", "2"))
    assert same(shard, ArraySet(arrays["inputs"].astype(np.float32), arrays["labels"].astype(np.uint8)))
    assert same(held_out, ArraySet(arrays["test_inputs"].astype(np.float32), arrays["test_labels"].astype(np.uint8)))


@pytest.mark.parametrize("arrays, problem", [
    ({"inputs": np.zeros((5, 2)), "labels": np.zeros(4, dtype=np.int64)}, "'inputs' holds 5 samples but 'labels' 4"),
    ({"inputs": np.zeros((4, 2)), "labels": np.array([0, 1, -1, 0])}, "label -1 out of range"),
    ({"inputs": np.zeros((4, 2)), "labels": np.array([0.0, 1.0, 1.0, 0.0])}, "labels must be integers"),
    ({"inputs": np.zeros((4, 2)), "labels": np.zeros(4, dtype=np.int8)}, "every label is 0"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, r"expected arrays 'inputs' and 'labels'.*found \['x', 'y'\]"),
    ({"inputs": np.full((4, 2), np.nan), "labels": np.array([0, 1, 0, 1])}, "NaN"),
    ({"inputs": np.zeros(4), "labels": np.array([0, 1, 0, 1])}, "must be N × sample shape"),
])
def test_tensor_file_malformed_names_the_file(tmp_path: Path, arrays: dict[str, np.ndarray], problem: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=f"bad.npz: .*{problem}"):
        load_dataset(path, SourceOptions(format="tensors"))


def test_npz_with_a_pickle_inside_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, inputs=np.array([{"__reduce__": "os.system"}, None], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="evil.npz: holds a pickled .*refused"):
        load_dataset(path, SourceOptions(format="tensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(DatasetError, match="junk.safetensors: not a valid safetensors"):
        load_dataset(tmp_path / "junk.safetensors", SourceOptions(format="tensors"))


# --- text corpora --------------------------------------------------------------------------------------------------

TEXT = "the cat sat on the mat. the dog sat on the log. " * 6


async def test_text_bytes_round_trip(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "a.txt").write_text(TEXT[:100], encoding="utf-8")
    (corpus / "b" / "c.txt").write_text(TEXT[100:] + "é", encoding="utf-8")
    (corpus / ".hidden").write_bytes(b"\xff")  # skipped
    options = SourceOptions(format="text", context_length=16, tokenizer="bytes")
    _, manifest, (shard,), held_out, _ = await add(tmp_path, corpus, options)
    info = manifest.info
    assert (info.task, info.vocab_size, info.tokenizer, info.input_shape, info.context_length) == (
        "causal_lm", 256, "bytes", (17,), 16)
    stream = np.frombuffer((TEXT + "é").encode(), dtype=np.uint8).astype(np.int32)
    windows = [stream[i * 16: i * 16 + 17] for i in range((stream.size - 1) // 16)]
    got = sorted(map(tuple, np.concatenate([shard.inputs, held_out.inputs]).tolist()))
    assert got == sorted(tuple(w.tolist()) for w in windows) and shard.is_sequences
    assert Tokenizer.from_info(info).decode(windows[0].tolist()) == TEXT[:17]


async def test_text_chars_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    options = SourceOptions(format="text", context_length=8, tokenizer="chars")
    _, manifest, (shard,), _, _ = await add(tmp_path, tmp_path / "t.txt", options)
    info = manifest.info
    assert info.alphabet == "".join(sorted(set(TEXT))) and info.vocab_size == len(info.alphabet)
    tok = Tokenizer.from_info(info)
    assert all(tok.decode(row) in TEXT for row in shard.inputs.tolist())


async def test_text_tokenizers_json_published_by_cid(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = sorted(set(TEXT.replace(".", " . ").split()))
    hf = HFTokenizer(WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()  # type: ignore[assignment]
    tok_path = tmp_path / "tokenizer.json"
    tok_path.write_text(hf.to_str(), encoding="utf-8")
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    options = SourceOptions(format="text", context_length=4, tokenizer=str(tok_path))
    _, manifest, (shard,), _, tokenizer_file = await add(tmp_path, tmp_path / "t.txt", options)
    info = manifest.info
    assert info.tokenizer == "tokenizers-json" and info.vocab_size == len(words) + 1
    assert tokenizer_file == tok_path.read_bytes()
    tok = Tokenizer.from_info(info, tokenizer_file)
    every_word = " ".join(TEXT.replace(".", " . ").split())
    assert all(" ".join(tok.decode(row).split()) in every_word for row in shard.inputs.tolist())
    (tmp_path / "broken.json").write_text('{"model": 3}', encoding="utf-8")
    with pytest.raises(DatasetError, match="broken.json: not a tokenizers JSON file"):
        load_dataset(tmp_path / "t.txt", SourceOptions(format="text", context_length=4,
                                                       tokenizer=str(tmp_path / "broken.json")))


def test_text_malformed_names_the_file(tmp_path: Path) -> None:
    options = SourceOptions(format="text", context_length=4, tokenizer="bytes")
    (tmp_path / "ok.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1.txt: not UTF-8 text \(invalid byte at offset 3\)"):
        load_dataset(tmp_path, options)
    with pytest.raises(DatasetError, match="empty folder"):
        load_dataset(_empty(tmp_path), options)
    (tmp_path / "short.txt").write_text("abc", encoding="utf-8")
    with pytest.raises(DatasetError, match="short.txt: 3 tokens, fewer than two samples"):
        load_dataset(tmp_path / "short.txt", options)
    with pytest.raises(DatasetError, match="--context-length"):
        SourceOptions(format="text", tokenizer="bytes")
    with pytest.raises(DatasetError, match="for --format text"):
        SourceOptions(format="idx", tokenizer="bytes")


def test_cli_dataset_add_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    argv = ["dataset", "add", str(tmp_path / "t.txt"), "--format", "text", "--context-length", "32", "--tokenizer",
            "chars", "--shards", "2", "--data-dir", str(tmp_path / "node"), "--licence", "CC0"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["task"], out["tokenizer"], out["input_shape"], out["shards"]) == ("causal_lm", "chars", [33], 2)
    assert main(["dataset", "add", str(tmp_path / "t.txt"), "--format", "tensors",
                 "--data-dir", str(tmp_path / "node")]) == 2
    assert "t.txt: a tensor dataset is a .safetensors or .npz file" in capsys.readouterr().err


async def test_fashion_mnist_through_the_idx_format_is_the_demo_dataset(tmp_path: Path,
                                                                         fmnist: tuple[ArraySet, ArraySet]) -> None:
    from node.roles.dataset_publish import publish_fashion_mnist
    from node.training.data import FASHION_MNIST_DIR

    store = LocalContentStore(FilesystemBlockStore(tmp_path / "blocks", max_bytes=1 << 30))
    demo = await publish_fashion_mnist(store, shards=2, eval_samples=50)
    generic = await publish_files(store, FASHION_MNIST_DIR, SourceOptions(format="idx"), shards=2, eval_samples=50)
    assert (generic.dataset_cid, generic.eval_cid) == (demo.dataset_cid, demo.eval_cid)


def test_job_spec_must_fit_its_dataset() -> None:
    from node.roles.dataset_publish import check_spec_data
    from protocols.specs import JobSpec, ModelConfig
    from storage.dataset import DatasetInfo

    images = DatasetInfo(format="image-folder", task="classification", licence="", input_shape=(3, 32, 32),
                         input_dtype="uint8", classes=tuple("abcdefghijkl"))
    corpus = DatasetInfo(format="text", task="causal_lm", licence="", input_shape=(129,), input_dtype="int32",
                         vocab_size=256, tokenizer="bytes")
    lm = ModelConfig(layers=2, width=64, heads=2, context=128, vocab=256)
    check_spec_data(JobSpec(model="resnet18-small-v1", model_config=ModelConfig(classes=12, channels=3)), images)
    check_spec_data(JobSpec(model="gpt2-lm-v1", model_config=lm, task="causal_lm"), corpus)
    with pytest.raises(DatasetError, match="task 'classification', but dataset .* is a causal_lm dataset"):
        check_spec_data(JobSpec(), corpus)
    with pytest.raises(DatasetError, match="model_config.classes 10 is fewer than the dataset's 12 classes"):
        check_spec_data(JobSpec(model="resnet18-small-v1", model_config=ModelConfig(classes=10)), images)
    with pytest.raises(DatasetError, match="model_config.vocab 100 is smaller than the dataset's bytes vocabulary"):
        check_spec_data(JobSpec(model="gpt2-lm-v1", model_config=replace(lm, vocab=100), task="causal_lm"), corpus)
    with pytest.raises(DatasetError, match="model_config.context 64 is shorter .* --context-length 64"):
        check_spec_data(JobSpec(model="gpt2-lm-v1", model_config=replace(lm, context=64), task="causal_lm"), corpus)
