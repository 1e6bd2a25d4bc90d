"""Model registry (:mod:`.registry`) over one module per family: the hand-written Fashion-MNIST nets
(:mod:`.fmnist`), torchvision image classifiers (:mod:`.vision`), transformers causal LMs (:mod:`.language`) and the
customer's ONNX graphs (:mod:`.onnx_graph`)."""

from node.training.models.registry import (
    MAX_PARAMETERS,
    MODELS,
    Architecture,
    ModelInfo,
    ModelRef,
    State,
    TaskKind,
    architecture,
    build_model,
    check_state_fits,
    get_model_info,
    initial_state,
    model_ref,
    num_parameters,
    state_layout,
    task_kind,
)

__all__ = [
    "MAX_PARAMETERS", "MODELS", "Architecture", "ModelInfo", "ModelRef", "State", "TaskKind", "architecture",
    "build_model", "check_state_fits", "get_model_info", "initial_state", "model_ref", "num_parameters",
    "state_layout", "task_kind",
]
