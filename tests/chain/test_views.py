"""The reader's own view codec against web3's contract functions: every view of the ABI, called with the same
arguments on a chain holding a job, a drawn update and registered participants, gives the same value, or the same
decoded revert."""

from __future__ import annotations

from typing import Any

from protocols.chain.abi import load_artifact
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import decode_revert

from .helpers import DRAW_DELAY, Chain, mine_blocks, one_update


def _sample(entry: dict[str, Any], ints: int, who: str) -> Any:
    """An argument of the parameter's type: small ints (a job id, round 0, slot 0 all work), a participant."""
    typ = str(entry["type"])
    if typ.endswith("]"):
        return [_sample({**entry, "type": typ[: typ.rindex("[")]}, ints, who)]
    if typ == "tuple":
        return tuple(_sample(c, ints, who) for c in entry["components"])
    if typ == "address":
        return who
    if typ == "bool":
        return True
    if typ.startswith("bytes"):
        return b"\x01" * (int(typ[5:]) if typ[5:] else 3)
    if typ == "string":
        return "x"
    return ints


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "value", fn()
    except Exception as exc:  # noqa: BLE001 (both paths' failures are compared, decoded)
        revert = decode_revert(exc)
        return type(revert).__name__, getattr(revert, "args", None)


def test_every_view_decodes_as_web3_does(chain: Chain, manager: JobManagerClient) -> None:
    update = one_update(chain, manager, range(4, 8))
    mine_blocks(manager.w3, DRAW_DELAY + 1)
    views = [e for e in load_artifact().entries("function") if e.get("stateMutability") in ("view", "pure")]
    compared = values = 0
    for entry in views:
        for ints, who in ((update.job_id, update.trainer.sender), (0, next(iter(update.validators)))):
            args = [_sample(i, ints, who) for i in entry["inputs"]]
            expected = _outcome(lambda e=entry, a=args: manager._contract.functions[e["name"]](*a).call(
                {"from": manager.account.address}))
            got = _outcome(lambda e=entry, a=args: manager._call(str(e["name"]), *a))
            assert got == expected, (entry["name"], args)
            compared += 1
            values += expected[0] == "value"
    assert compared == 2 * len(views) and values > len(views)  # most calls answered, not only reverts
