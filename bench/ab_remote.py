"""A/B of the command round trip: the plugin from two source trees, side by side.

    .venv/bin/python bench/ab_remote.py TREE_A TREE_B [--requests 600] [--chunk 25]
                                        [--mqtt-version auto|5|3.1.1]

TREE_A and TREE_B are ``src`` directories (this checkout's, a git worktree's):
two collectds on one throwaway mosquitto, each importing ``collectd_monitor``
from its own tree, and ``bench_remote.py``'s floor responder, measured in turns
of ``--chunk`` round trips so that the machine's drift moves all three alike,
A before B in one turn and B before A in the next. Prints each p50 (and its
ratio to the floor) and B - A. The same tree twice gives the method's own
noise: between -19 and +30 µs in five runs of 900 round trips on the quiet
2-core machine, so a difference smaller than that says nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import bench_remote
import paho

from collectd_monitor.confblock import python_block
from collectd_monitor.testing.sandbox import Broker, Collectd


class TreeCollectd(Collectd):
    """A collectd whose Python plugins come from ``tree`` (paho from this install)."""

    tree: str = ""

    def render_config(self) -> str:
        ours = python_block(self.modules)
        paths = [self.tree, str(Path(paho.__file__).resolve().parent.parent)]
        return super().render_config().replace(ours, python_block(self.modules, paths))


def start(
    workdir: Path, broker: Broker, name: str, tree: str, topics: tuple[str, str], version: str
) -> Collectd:
    config = bench_remote.monitor_config(workdir, broker, name, topics, version)
    modules = {"collectd_monitor.remote": {"MonitorConfigPath": str(config)}}
    collectd = TreeCollectd(workdir / name, modules=modules, hostname=name)
    collectd.tree = str(Path(tree).resolve())
    return collectd.start(wait_log="connected to")


def turns(
    broker: Broker, targets: list[tuple[str, str]], count: int, chunk: int
) -> list[list[float]]:
    """Like ``bench_remote.interleaved``, the two last targets swapping places each turn."""
    for topics in targets:
        bench_remote.plugin_round_trips(broker, 20, topics)  # warm-up
    samples: list[list[float]] = [[] for _ in targets]
    order = list(range(len(targets)))
    while len(samples[0]) < count:
        size = min(chunk, count - len(samples[0]))
        for index in order:
            samples[index].extend(bench_remote.plugin_round_trips(broker, size, targets[index]))
        order[-2:] = order[-1], order[-2]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--mqtt-version", default="auto")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-ab-"))
    broker = Broker(workdir / "broker").start()
    try:
        topics_a, topics_b = ("ab/a/command", "ab/a/result"), ("ab/b/command", "ab/b/result")
        a = start(workdir, broker, "a", args.tree_a, topics_a, args.mqtt_version)
        try:
            b = start(workdir, broker, "b", args.tree_b, topics_b, args.mqtt_version)
            try:
                with bench_remote.responder(broker) as floor_topics:
                    floor, got_a, got_b = turns(
                        broker, [floor_topics, topics_a, topics_b], args.requests, args.chunk
                    )
            finally:
                b.stop()
        finally:
            a.stop()
    finally:
        broker.stop()
    base = statistics.median(floor)
    for name, samples in (
        ("floor", floor),
        (f"A {args.tree_a}", got_a),
        (f"B {args.tree_b}", got_b),
    ):
        p50 = statistics.median(samples)
        p99 = bench_remote.percentile(samples, 99)
        print(f"{name:<40} p50 {p50 * 1e3:.3f} ms ({p50 / base:.3f}x)  p99 {p99 * 1e3:.2f} ms")
    print(f"B - A at p50: {(statistics.median(got_b) - statistics.median(got_a)) * 1e6:+.0f} µs")


if __name__ == "__main__":
    main()
