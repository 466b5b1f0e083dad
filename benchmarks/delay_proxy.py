"""A small delaying TCP proxy: every forwarded chunk leaves ``--delay-ms`` after it arrived.

The machine has no netem, so the Azure benchmark puts this between the client and Azurite to
model a GPU node far from its storage account. Each direction of each connection has a reader
that stamps chunks as they arrive and a writer that sends each one when its time has come, so the
proxy adds latency without limiting bandwidth (chunks in flight overlap; nothing is serialised
behind a sleep). A request/response round trip therefore costs 2 x delay more than on loopback.

``--window-kb`` also models TCP's window: each direction of a connection keeps at most that many
bytes unacknowledged, a byte counting until its acknowledgement would be back (delay after it was
delivered), so one connection carries at most window / (2 x delay), as a real one far away does.
Without it (the default) a single connection is as fast as loopback, only later.

    python benchmarks/delay_proxy.py --listen 127.0.0.1:0 --target 127.0.0.1:10000 --delay-ms 30 [--window-kb 1024]

prints ``listening 127.0.0.1:PORT`` (the real port when 0 was asked) on stdout once it accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

CHUNK = 256 * 1024
_TASKS: set[asyncio.Task[None]] = set()  # strong refs: asyncio drops its own when a client hangs up


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, window: int) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    unacked = 0  # bytes read and not yet acknowledged (only counted with a window)
    acked = asyncio.Event()

    def ack(n: int) -> None:
        nonlocal unacked
        unacked -= n
        acked.set()

    async def pump_in() -> None:
        nonlocal unacked
        while True:
            while window and unacked >= window:
                acked.clear()
                await acked.wait()
            try:
                data = await reader.read(min(CHUNK, window - unacked) if window else CHUNK)
            except (ConnectionError, OSError):
                data = b""
            unacked += len(data)
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def pump_out() -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                if window:  # the acknowledgement travels back as long as the data came
                    loop.call_later(delay, ack, len(data))
        except (ConnectionError, OSError):
            return

    feeder = asyncio.create_task(pump_in())
    try:
        await pump_out()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await feeder


async def _handle(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int, delay: float, window: int
) -> None:
    task = asyncio.current_task()
    if task is not None:
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, up_w, delay, window), _pipe(up_r, client_w, delay, window))
    finally:
        for w in (up_w, client_w):
            w.close()


async def serve(listen_host: str, listen_port: int, host: str, port: int, delay_ms: float, window_kb: int = 0) -> None:
    delay = delay_ms / 1000.0
    window = window_kb * 1024
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, host, port, delay, window), listen_host, listen_port, limit=CHUNK
    )
    real_port = server.sockets[0].getsockname()[1]
    print(f"listening {listen_host}:{real_port}", flush=True)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="host:port to accept on (port 0 = any free)")
    ap.add_argument("--target", required=True, help="host:port to forward to")
    ap.add_argument("--delay-ms", type=float, default=30.0, help="delay added to every chunk, each way")
    ap.add_argument(
        "--window-kb", type=int, default=0, help="unacknowledged bytes per connection and direction (0: no limit)"
    )
    args = ap.parse_args(argv)
    lh, lp = _addr(args.listen)
    th, tp = _addr(args.target)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(lh, lp, th, tp, args.delay_ms, args.window_kb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
