"""A point-to-point link with delay, jitter and loss, for kernels without ``tc netem`` (sch_netem).

``python -m tests.edge.linkemu NS HOST_IF NS_IF`` opens a TUN device ``HOST_IF`` in the caller's (root) network
namespace and ``NS_IF`` in namespace ``NS`` (``ip netns``), prints ``ready`` and then carries every IP packet
from one to the other, as a cable would. On SIGUSR1 it starts degrading the link the way
``tc qdisc add dev X root netem delay 80ms 40ms loss 10%`` on both ends does: each packet, in each direction,
is lost with probability ``--loss`` or else delivered after ``--delay-ms`` ± ``--jitter-ms`` (uniform; packets
may overtake each other, as with netem's jitter). It prints one line of totals on SIGTERM.

The caller gives the two devices their addresses (``ip addr add A peer B dev HOST_IF``) and sets them up.
Both devices disappear with the process.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("ns")
    ap.add_argument("host_if")
    ap.add_argument("ns_if")
    ap.add_argument("--delay-ms", type=float, default=80.0)
    ap.add_argument("--jitter-ms", type=float, default=40.0)
    ap.add_argument("--loss", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)

    host = open_tun(args.host_if)  # in the namespace this process started in
    setns(f"/var/run/netns/{args.ns}")  # single-threaded: the whole process moves
    inner = open_tun(args.ns_if)  # stays in NS whatever this process does next
    rng = random.Random(args.seed)
    degraded = False
    stop = False
    totals = {"carried": 0, "lost": 0, "delayed": 0, "delayed_ms_sum": 0.0}

    def on_usr1(_sig: int, _frame: object) -> None:
        nonlocal degraded
        degraded = True

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)

    other = {host: inner, inner: host}
    due: list[tuple[float, int, int, bytes]] = []  # (when, order, fd to write, packet)
    order = 0
    while not stop:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 0.5
        try:
            readable, _, _ = select.select([host, inner], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not degraded:
                    when = now
                elif rng.random() < args.loss:
                    totals["lost"] += 1
                    continue
                else:
                    delay = max(0.0, args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)) / 1000.0
                    totals["delayed"] += 1
                    totals["delayed_ms_sum"] += delay * 1000.0
                    when = now + delay
                order += 1
                heapq.heappush(due, (when, order, other[fd], packet))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, fd, packet = heapq.heappop(due)
            try:
                os.write(fd, packet)
                totals["carried"] += 1
            except OSError:  # the device is down (link set down): the packet is lost, as on a cable
                totals["lost"] += 1
    mean = totals["delayed_ms_sum"] / totals["delayed"] if totals["delayed"] else 0.0
    print(f"carried {totals['carried']} packets, lost {totals['lost']}, {totals['delayed']} delayed by {mean:.0f} ms "
          "on average", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
