#!/usr/bin/env python3
"""A byte-counting, optionally delaying TCP proxy (bench/remote.sh).

    tcp-proxy.py --listen PORT --to HOST:PORT [--delay-ms D] --stats SOCKET

Forwards every connection accepted on 127.0.0.1:PORT to HOST:PORT and counts
the payload bytes moved each way (TCP payload: HTTP headers and bodies, no
TCP/IP headers). With --delay-ms D every chunk is forwarded D ms after it was
read, in each direction, order preserved (a one-way delay of D, a round trip
of 2D), and a new connection's first client bytes wait one round trip more, as
a TCP handshake would make them. Only latency is added: no bandwidth limit,
and the proxy's own TCP windows are loopback's.

A connection to the unix socket SOCKET answers one JSON line:
{"up": client->server bytes, "down": server->client bytes,
 "connections": accepted so far, "active": open now}. Ready once SOCKET exists.
"""
import argparse
import asyncio
import json
import os
import time

CHUNK = 256 * 1024
QUEUE = 64  # chunks in flight per direction: backpressure beyond ~16 MB

stats = {"up": 0, "down": 0, "connections": 0, "active": 0}


async def pump(reader, writer, key, delay, not_before):
    """reader -> writer, each chunk due max(read time, not_before) + delay."""
    q = asyncio.Queue(QUEUE)

    async def read():
        try:
            while True:
                data = await reader.read(CHUNK)
                now = time.monotonic()
                await q.put((max(now, not_before) + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await q.put((0, b""))

    async def write():
        try:
            while True:
                due, data = await q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                stats[key] += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    r = asyncio.ensure_future(read())
    await write()
    r.cancel()


async def serve(cr, cw, host, port, delay):
    stats["connections"] += 1
    stats["active"] += 1
    accepted = time.monotonic()
    try:
        try:
            sr, sw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(
            pump(cr, sw, "up", delay, accepted + 2 * delay),
            pump(sr, cw, "down", delay, 0),
        )
        for w in (sw, cw):
            w.close()
        for w in (sw, cw):
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass
    finally:
        stats["active"] -= 1


async def report(_r, w):
    w.write((json.dumps(stats) + "\n").encode())
    await w.drain()
    w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay-ms", type=float, default=0)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    host, port = a.to.rsplit(":", 1)
    delay = a.delay_ms / 1000
    server = await asyncio.start_server(lambda r, w: serve(r, w, host, int(port), delay), "127.0.0.1", a.listen)
    if os.path.exists(a.stats):
        os.unlink(a.stats)
    ctl = await asyncio.start_unix_server(report, a.stats)
    async with server, ctl:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
