"""Encoding a view call's arguments and decoding its result, as web3's contract functions do, without their cost.

``ViewCodec.of(abi_entry)`` is built once per function: its selector, its input and output types, and a converter
per output that turns addresses into checksummed strings, arrays into lists and structs into tuples (what web3's
return normalizers give for our ABI, which ``tests/chain/test_views.py`` compares view by view). A single output is
returned bare; several as a list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from eth_utils.address import to_checksum_address

Convert = Callable[[Any], Any]


def _converter(entry: Mapping[str, Any]) -> Convert:
    """What turns eth_abi's decoded value of one ABI parameter into web3's."""
    typ = str(entry["type"])
    if typ.endswith("]"):
        inner = _converter({**entry, "type": typ[: typ.rindex("[")]})
        return lambda values: [inner(v) for v in values]
    if typ == "tuple":
        parts = [_converter(c) for c in entry["components"]]
        return lambda values: tuple(conv(v) for conv, v in zip(parts, values, strict=True))
    if typ == "address":
        return to_checksum_address
    return _same


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class ViewCodec:
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    converters: tuple[Convert, ...]

    @classmethod
    def of(cls, abi_entry: Mapping[str, Any]) -> ViewCodec:
        return cls(selector=function_abi_to_4byte_selector(abi_entry),  # type: ignore[arg-type]
                   inputs=tuple(get_abi_input_types(abi_entry)),  # type: ignore[arg-type]
                   outputs=tuple(get_abi_output_types(abi_entry)),  # type: ignore[arg-type]
                   converters=tuple(_converter(o) for o in abi_entry["outputs"]))

    def encode(self, args: Sequence[Any]) -> bytes:
        return self.selector + abi_encode(self.inputs, args)

    def decode(self, data: bytes) -> Any:
        values = [conv(v) for conv, v in zip(self.converters, abi_decode(self.outputs, data), strict=True)]
        return values[0] if len(values) == 1 else values
