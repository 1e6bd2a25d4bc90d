"""Storage benchmark: UnixFS import MB/s, and bitswap exchange MB/s vs a raw libp2p stream, two processes on loopback.

    .venv/bin/python bench/bench_storage.py [--mb 64] [--runs 3] [--profile DIR]

A child process serves the same bytes two ways: as a UnixFS DAG over bitswap (our BlockExchange) and as one raw
libp2p stream (/bench/raw/1.0.0). The parent fetches both and prints the throughputs side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import multiaddr
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.network.stream.exceptions import StreamEOF  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402

from protocols.p2p.hardening import install_hardening  # noqa: E402
from storage.blockstore import FilesystemBlockStore  # noqa: E402
from storage.cid import parse_cid  # noqa: E402
from storage.content import LocalContentStore  # noqa: E402
from storage.exchange import BlockExchange  # noqa: E402
from storage.unixfs import import_bytes  # noqa: E402
from tests.storage.conftest import deterministic_bytes, make_host  # noqa: E402

RAW_PROTOCOL = TProtocol("/bench/raw/1.0.0")


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def payload(mb: int) -> bytes:
    return b"".join(deterministic_bytes(mb << 20, "bench-storage"))


async def serve(mb: int) -> None:
    data = payload(mb)
    host = make_host()
    store = FilesystemBlockStore(tempfile.mkdtemp(prefix="bench-serve-"), max_bytes=1 << 34, durable=False)
    exchange = BlockExchange(host, store)

    async def raw_handler(stream: object) -> None:
        view = memoryview(data)
        for start in range(0, len(view), 1 << 20):
            await stream.write(bytes(view[start : start + (1 << 20)]))  # type: ignore[attr-defined]
        await stream.close()  # type: ignore[attr-defined]

    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]), trio.open_nursery() as nursery:
        host.set_stream_handler(RAW_PROTOCOL, raw_handler)  # type: ignore[arg-type]
        await nursery.start(exchange.run)
        cid = await LocalContentStore(store, exchange).put(data)
        addr = f"{host.get_addrs()[0]}"
        if "/p2p/" not in addr:
            addr += f"/p2p/{host.get_id()}"
        print(json.dumps({"addr": addr, "cid": cid}), flush=True)
        # Each line from the parent asks for our CPU seconds so far; EOF (the parent closed stdin) ends us.
        while await trio.to_thread.run_sync(sys.stdin.readline):
            print(json.dumps({"cpu_s": cpu_seconds()}), flush=True)
        nursery.cancel_scope.cancel()


async def fetch(mb: int, runs: int, profile_dir: str | None = None) -> None:
    t0 = time.perf_counter()
    data = payload(mb)
    t1 = time.perf_counter()
    import_bytes(data)
    t2 = time.perf_counter()
    print(f"import: {mb} MiB in {t2 - t1:.2f} s = {mb / (t2 - t1):.1f} MiB/s (input generation {t1 - t0:.2f} s)")

    child = [sys.executable, __file__, "--serve", "--mb", str(mb)]
    if profile_dir:
        child += ["--profile", profile_dir]
    proc = await trio.lowlevel.open_process(child, stdin=-1, stdout=-1)
    assert proc.stdout is not None and proc.stdin is not None
    line = b""
    with trio.fail_after(120):
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive_some(4096)
    info = json.loads(line)
    replies = b""

    async def both_cpu() -> tuple[float, float]:
        """(our CPU seconds, the server's), asked over its stdin."""
        nonlocal replies
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send_all(b"cpu\n")
        with trio.fail_after(30):
            while b"\n" not in replies:
                replies += await proc.stdout.receive_some(4096)
        reply, replies = replies.split(b"\n", 1)
        return cpu_seconds(), float(json.loads(reply)["cpu_s"])

    peer = info_from_p2p_addr(multiaddr.Multiaddr(info["addr"]))
    host = make_host()
    rows = []
    cpu_rows: list[tuple[float, float]] = []
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        await host.connect(peer)
        for run in range(runs):
            # raw stream
            cpu0 = await both_cpu()
            start = time.perf_counter()
            stream = await host.new_stream(peer.peer_id, [RAW_PROTOCOL])
            got = 0
            while True:
                try:
                    chunk = await stream.read(1 << 20)
                except StreamEOF:
                    break
                if not chunk:
                    break
                got += len(chunk)
            raw_s = time.perf_counter() - start
            cpu1 = await both_cpu()
            assert got == len(data)
            # bitswap into a fresh store
            store = FilesystemBlockStore(tempfile.mkdtemp(prefix="bench-fetch-"), max_bytes=1 << 34, durable=False)
            exchange = BlockExchange(host, store)
            async with trio.open_nursery() as nursery:
                await nursery.start(exchange.run)
                cpu2 = await both_cpu()
                start = time.perf_counter()
                await exchange.fetch_dag(parse_cid(info["cid"]), [peer], timeout_s=300)
                bs_s = time.perf_counter() - start
                cpu3 = await both_cpu()
                content = LocalContentStore(store, exchange)
                assert await content.get(info["cid"], max_bytes=len(data), timeout_s=10) == data
                nursery.cancel_scope.cancel()
            rows.append((mb / raw_s, mb / bs_s))
            # CPU ms per MiB in each process: unlike MiB/s, barely moved by other load on the machine.
            raw_ms = [1000 * (b - a) / mb for a, b in zip(cpu0, cpu1, strict=True)]
            bs_ms = [1000 * (b - a) / mb for a, b in zip(cpu2, cpu3, strict=True)]
            cpu_rows.append((max(raw_ms), max(bs_ms)))
            print(f"run {run + 1}: raw stream {mb / raw_s:6.1f} MiB/s | bitswap {mb / bs_s:6.1f} MiB/s | "
                  f"ratio {raw_s / bs_s:.0%} | CPU ms/MiB fetcher, server: raw {raw_ms[0]:.1f}, {raw_ms[1]:.1f}; "
                  f"bitswap {bs_ms[0]:.1f}, {bs_ms[1]:.1f}")
    await proc.stdin.aclose()
    await proc.wait()
    raw = sorted(r for r, _ in rows)[len(rows) // 2]
    bs = sorted(b for _, b in rows)[len(rows) // 2]
    print(f"median: raw stream {raw:.1f} MiB/s, bitswap {bs:.1f} MiB/s, bitswap/raw = {bs / raw:.0%} (goal >= 50%)")
    raw_cpu = sorted(r for r, _ in cpu_rows)[len(cpu_rows) // 2]
    bs_cpu = sorted(b for _, b in cpu_rows)[len(cpu_rows) // 2]
    print(f"median CPU of the busier process: raw {raw_cpu:.1f} ms/MiB, bitswap {bs_cpu:.1f} ms/MiB: CPU-bound "
          f"bitswap/raw = {raw_cpu / bs_cpu:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of both processes to DIR")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    install_hardening()  # as the dtnode binary does at start-up, before any host
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    if args.serve:
        trio.run(serve, args.mb)
    else:
        trio.run(fetch, args.mb, args.runs, args.profile)
    if profiler is not None:
        profiler.disable()
        out = Path(args.profile) / ("serve.prof" if args.serve else "fetch.prof")
        profiler.dump_stats(out)
        if not args.serve:
            print(f"profiles: {out} and {out.with_name('serve.prof')} (python -m pstats)")


if __name__ == "__main__":
    main()
