// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IJobManagerTypes} from "./IJobManager.sol";

/// @title JobManagerLib: stake-weighted draws, future-block seeds and ticket hashing for JobManager
/// @notice Pure bookkeeping that the state machine uses: a sum tree (Fenwick tree) of validator stakes with
/// O(log n) updates and O(k log n) draws of k distinct members, the seed of a draw anchored at a block, and the
/// EIP-712 struct hashes of a ticket and of a vote. Every function is internal (inlined: no linking, no delegatecall).
library JobManagerLib {
    /// @dev A pool of accounts with weights, as a Fenwick tree over slots 1..size. A removed member's slot keeps
    /// weight 0 and goes on a free list, so the tree never grows past the most members it ever held at once.
    struct SumTree {
        uint256 size; // slots allocated
        uint256 total; // sum of all weights
        uint256 count; // members with weight > 0
        mapping(uint256 slot => uint256) node; // Fenwick node sums, 1-based
        mapping(uint256 slot => uint256) weight;
        mapping(uint256 slot => address) memberAt;
        mapping(address account => uint256) slotOf; // 0: not a member
        uint256[] free;
        uint256 changedAt; // block of the last change: a draw anchored before it is re-anchored
    }

    /// @dev Slots already drawn (or excluded) during one draw, with their weights.
    struct Taken {
        uint256[] slots;
        uint256[] weights;
        uint256 n;
    }

    bytes32 internal constant TICKET_TYPEHASH = keccak256(
        "Ticket(uint256 jobId,uint32 round,uint32 term,address trainer,uint32 slot,uint32 workUnits,uint64 expiry,bytes32 taskHash)"
    );

    bytes32 internal constant VOTE_TYPEHASH =
        keccak256("Vote(uint256 jobId,uint32 round,uint32 slot,uint48 anchorBlock,bool valid)");

    /// @dev Whether an account is a member (weight > 0).
    function contains(SumTree storage t, address account) internal view returns (bool) {
        return t.slotOf[account] != 0;
    }

    /// @dev The weight of a member (0 for a non-member).
    function weightOf(SumTree storage t, address account) internal view returns (uint256) {
        uint256 slot = t.slotOf[account];
        return slot == 0 ? 0 : t.weight[slot];
    }

    /// @dev Adds a non-member with weight w > 0 (callers check membership and bounds).
    function add(SumTree storage t, address account, uint256 w) internal {
        uint256 slot;
        uint256 n = t.free.length;
        if (n != 0) {
            slot = t.free[n - 1];
            t.free.pop();
            _addAt(t, slot, w);
        } else {
            slot = ++t.size;
            // A new last node covers (slot - lowbit(slot), slot]: its sum is w plus the weights already there.
            t.node[slot] = w + _prefix(t, slot - 1) - _prefix(t, slot - (slot & (~slot + 1)));
        }
        t.weight[slot] = w;
        t.memberAt[slot] = account;
        t.slotOf[account] = slot;
        t.total += w;
        ++t.count;
        t.changedAt = block.number;
    }

    /// @dev Removes a member; its slot is reused by the next add.
    function remove(SumTree storage t, address account) internal {
        uint256 slot = t.slotOf[account];
        uint256 w = t.weight[slot];
        _subAt(t, slot, w);
        t.total -= w;
        --t.count;
        delete t.weight[slot];
        delete t.memberAt[slot];
        delete t.slotOf[account];
        t.free.push(slot);
        t.changedAt = block.number;
    }

    /// @dev Lowers a member's weight to 0 < w <= its weight (stake only grows by re-registering).
    function lowerWeight(SumTree storage t, address account, uint256 w) internal {
        uint256 slot = t.slotOf[account];
        uint256 delta = t.weight[slot] - w;
        _subAt(t, slot, delta);
        t.total -= delta;
        t.weight[slot] = w;
        t.changedAt = block.number;
    }

    /// @dev The members in slot order (for views; O(size)).
    function members(SumTree storage t) internal view returns (address[] memory list) {
        list = new address[](t.count);
        uint256 j = 0;
        uint256 n = t.size;
        for (uint256 slot = 1; slot <= n; ++slot) {
            address a = t.memberAt[slot];
            if (a != address(0)) list[j++] = a;
        }
    }

    /// @dev Draws k distinct members with probability proportional to weight (without replacement), never
    /// `exclude`. Draw i hashes (seed, i) to a point of the remaining weight and descends the tree; weights
    /// already drawn (and exclude's) are subtracted in memory, so nothing is written.
    /// @return picked The members drawn, in draw order.
    function draw(
        SumTree storage t,
        bytes32 seed,
        uint256 k,
        address exclude
    ) internal view returns (address[] memory picked) {
        Taken memory out = Taken(new uint256[](k + 1), new uint256[](k + 1), 0);
        uint256 remaining = t.total;
        {
            uint256 available = t.count;
            uint256 excluded = t.slotOf[exclude];
            if (excluded != 0) {
                out.slots[0] = excluded;
                out.weights[0] = t.weight[excluded];
                remaining -= out.weights[0];
                out.n = 1;
                --available;
            }
            if (available < k) revert IJobManagerTypes.JobManagerNotEnoughValidators(available, k);
        }
        uint256 top = 1;
        while (top * 2 <= t.size) top *= 2;
        picked = new address[](k);
        for (uint256 i; i < k; ++i) {
            uint256 slot = _find(t, uint256(keccak256(abi.encode(seed, i))) % remaining, top, out);
            uint256 w = t.weight[slot];
            picked[i] = t.memberAt[slot];
            out.slots[out.n] = slot;
            out.weights[out.n] = w;
            ++out.n;
            remaining -= w;
        }
    }

    /// @dev The sum of the weights of `list` (members only).
    function weightOfAll(SumTree storage t, address[] memory list) internal view returns (uint256 sum) {
        uint256 n = list.length;
        for (uint256 i = 0; i < n; ++i) sum += weightOf(t, list[i]);
    }

    /// @dev The slot holding point r of the weights minus the slots already taken: the smallest slot whose
    /// adjusted prefix sum exceeds r (Fenwick descent from the highest power of two <= size).
    function _find(SumTree storage t, uint256 r, uint256 top, Taken memory out) private view returns (uint256) {
        uint256 size = t.size;
        uint256 pos = 0;
        for (uint256 step = top; step != 0; step >>= 1) {
            uint256 next = pos + step;
            if (next > size) continue;
            uint256 v = t.node[next];
            for (uint256 j; j < out.n; ++j) {
                uint256 s = out.slots[j];
                if (s > pos && s <= next) v -= out.weights[j];
            }
            if (v <= r) {
                pos = next;
                r -= v;
            }
        }
        return pos + 1;
    }

    /// @dev Picks one index of `weights` with probability proportional to its weight (0 total: type(uint256).max).
    function pickWeighted(uint256[] memory weights, bytes32 seed) internal pure returns (uint256) {
        uint256 total = 0;
        uint256 n = weights.length;
        for (uint256 i = 0; i < n; ++i) total += weights[i];
        if (total == 0) return type(uint256).max;
        uint256 r = uint256(seed) % total;
        uint256 last = n - 1;
        for (uint256 i = 0; i < last; ++i) {
            if (r < weights[i]) return i;
            r -= weights[i];
        }
        return last; // r < total: what is left falls in the last weight
    }

    /// @dev The hash of block `anchor + delay`, or zero when that block is not mined yet (`ready` false) or is
    /// older than the 256 blocks the EVM keeps (`ready` true, hash zero: the caller re-anchors).
    function seedAt(uint256 anchor, uint256 delay) internal view returns (bool ready, bytes32 hash) {
        uint256 target = anchor + delay;
        if (block.number <= target) return (false, bytes32(0));
        return (true, blockhash(target));
    }

    /// @dev The EIP-712 struct hash of a ticket.
    function hashTicket(IJobManagerTypes.Ticket calldata t) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(TICKET_TYPEHASH, t.jobId, t.round, t.term, t.trainer, t.slot, t.workUnits, t.expiry, t.taskHash)
        );
    }

    /// @dev The EIP-712 struct hash of a first-panel vote (bound to the draw's anchor: a re-drawn panel cannot
    /// reuse it).
    function hashVote(uint256 jobId, uint32 round, uint32 slot, uint48 anchorBlock, bool valid)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(VOTE_TYPEHASH, jobId, round, slot, anchorBlock, valid));
    }

    function _prefix(SumTree storage t, uint256 i) private view returns (uint256 sum) {
        for (; i != 0; i &= i - 1) sum += t.node[i];
    }

    function _addAt(SumTree storage t, uint256 slot, uint256 delta) private {
        uint256 n = t.size;
        for (uint256 i = slot; i <= n; i += i & (~i + 1)) t.node[i] += delta;
    }

    function _subAt(SumTree storage t, uint256 slot, uint256 delta) private {
        uint256 n = t.size;
        for (uint256 i = slot; i <= n; i += i & (~i + 1)) t.node[i] -= delta;
    }
}
