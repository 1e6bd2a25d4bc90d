"""The dataset formats ``dtnode dataset add`` reads, one module each, into samples (:class:`~node.training.data.
ArraySet`) and a description (:class:`~storage.dataset.DatasetInfo`): :mod:`.idx` (MNIST-style IDX files),
:mod:`.images` (an image folder, one sub-folder per class), :mod:`.tensors` (``.safetensors``/``.npz``), :mod:`.text`
(a UTF-8 corpus, tokenised by :mod:`.tokenizer`). :func:`.source.load_dataset` picks the reader.

Every malformed input is a :class:`~node.training.errors.DatasetError` naming the file and the problem. Readers never
run code from the data: no pickles, no tokenizer scripts, images decoded by Pillow.
"""
