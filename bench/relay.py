"""A TCP relay that adds latency: Redis "in another zone" on loopback, for fault tests and the bench.

    python -m bench.relay --target 127.0.0.1:6379 --delay-ms 80 [--listen-port 0]

Every byte is passed on unchanged and in order, half the added round-trip time late in each
direction, so a request and its reply take `--delay-ms` longer than without the relay. It prints
`listening on PORT` once it accepts connections, and runs until it is stopped (SIGTERM, SIGINT).
Loopback only: it listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy `reader` to `writer`, each chunk `delay` seconds after it arrived. Later chunks are due
    later, so call_at keeps their order."""
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            loop.call_at(loop.time() + delay, _write, writer, data)
        loop.call_at(loop.time() + delay, _close, writer)
    except (ConnectionError, OSError):
        loop.call_at(loop.time() + delay, _close, writer)


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


async def serve(target_host: str, target_port: int, delay: float, listen_port: int = 0) -> None:
    one_way = delay / 2

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            _close(client_writer)
            return
        await asyncio.gather(
            _pump(client_reader, server_writer, one_way),
            _pump(server_reader, client_writer, one_way),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=int, required=True, help="added round-trip time in milliseconds")
    parser.add_argument("--listen-port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host or "127.0.0.1", int(port), args.delay_ms / 1000, args.listen_port))


if __name__ == "__main__":
    main()
