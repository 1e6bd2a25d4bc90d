"""JobSpec's model section (``model_config``, schema dtnode/model/1): out of the bytes while unused, strict inside."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from protocols.errors import SchemaError
from protocols.specs import MODEL_CONFIG_SCHEMA, JobSpec, ModelConfig

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
LM = ModelConfig(layers=4, width=256, heads=8, context=128, vocab=256)


def spec(**kw: object) -> JobSpec:
    return replace(JobSpec().with_content(dataset_cid=CID, eval_cid=CID, initial_checkpoint_cid=CID), **kw)


def test_a_spec_without_a_model_section_keeps_its_bytes() -> None:
    plain = spec()
    assert b"model_config" not in plain.to_bytes()
    explicit = json.loads(plain.to_bytes())
    explicit["model_config"] = ModelConfig().to_dict()  # a second byte form of the same spec: refused
    with pytest.raises(SchemaError, match="model_config"):
        JobSpec.from_dict(explicit)


def test_the_model_section_round_trips_with_its_schema() -> None:
    lm = spec(model="gpt2-lm-v1", model_config=LM)
    body = json.loads(lm.to_bytes())
    assert body["model_config"]["schema"] == MODEL_CONFIG_SCHEMA and body["model_config"]["layers"] == 4
    assert JobSpec.from_bytes(lm.to_bytes()) == lm
    own = spec(model="onnx-v1", model_config=ModelConfig(onnx_cid=CID))
    assert JobSpec.from_bytes(own.to_bytes()).model_config.onnx_cid == CID


@pytest.mark.parametrize(("change", "needle"), [
    ({"layers": 97}, "model_config.layers"),
    ({"vocab": -1}, "model_config.vocab"),
    ({"onnx_cid": "not-a-cid"}, "model_config.onnx_cid"),
    ({"schema": "dtnode/model/2"}, "model_config.schema"),
    ({"dropout": "0.1"}, "dropout"),
])
def test_the_model_section_is_strict(change: dict[str, object], needle: str) -> None:
    body = json.loads(spec(model="gpt2-lm-v1", model_config=LM).to_bytes())
    body["model_config"].update(change)
    with pytest.raises(SchemaError, match=needle):
        JobSpec.from_dict(body)
