"""A TCP proxy on 127.0.0.1 that delays what it carries, both ways: a long link on one machine.

    .venv/bin/python scripts/delay_proxy.py --to HOST:PORT [--listen PORT] [--rtt-ms 20]

Prints the port it listens on, then forwards every connection to HOST:PORT, holding each
chunk for half the round trip in each direction (order kept, bandwidth not limited). For
benchmarks of peers far apart without root or `tc netem`.
"""

from __future__ import annotations

import argparse
import math

import trio


async def _carry(source: trio.SocketStream, sink: trio.SocketStream, delay: float) -> None:
    """Forward source to sink, each chunk `delay` seconds after it arrived."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

    async def take() -> None:
        async with send:
            try:
                while data := await source.receive_some(1 << 16):
                    await send.send((trio.current_time() + delay, data))
            except trio.BrokenResourceError:
                pass

    async def give() -> None:
        try:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        nursery.start_soon(give)


async def serve(listen: int, host: str, port: int, rtt: float, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Proxy 127.0.0.1:`listen` (0: any free port, passed to `task_status`) to host:port."""

    async def handle(client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(host, port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(_carry, client, server, rtt / 2)
            nursery.start_soon(_carry, server, client, rtt / 2)

    listeners = await trio.open_tcp_listeners(listen, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, metavar="HOST:PORT")
    parser.add_argument("--listen", type=int, default=0, metavar="PORT")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(serve, args.listen, host, int(port), args.rtt_ms / 1000)
            print(listening, flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
