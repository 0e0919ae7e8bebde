"""How long a cache line takes to go from one CPU to another and back: which "phase" a shared VM is in.

    python -m benchmarks.core_latency [--seconds 20]

Two threads, pinned to the first two CPUs this process may use, hand a counter back and forth; the figure is the
median round trip in nanoseconds per 50 ms window. On the 2-vCPU AMD EPYC VM of these benchmarks it is about
80 ns for some minutes and about 360 ns for others: the host moves the two vCPUs between one core complex and
two. onnxruntime splits every operator of a run between its threads, so a run on two threads pays that latency
at each operator and the activations it moves across; two runs at once, one thread each, do not
(`python -m experiments.levers`). The harness records the figure before and after every system's measurement,
and `python -m benchmarks --phase near` (or `far`) waits for that phase before each one.

The probe is a few lines of C, compiled once with the system's C compiler (`cc`) into the benchmark cache;
without a compiler, or with fewer than two CPUs, the figure is None.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

NEAR_NS = 150.0  # a round trip below this: one core complex (70-80 ns on this VM); above: two (300 ns or more)

SOURCE = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long counter = 0;
static _Atomic int stop = 0;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *pong(void *arg) {
    pin(*(int *)arg);
    while (!atomic_load(&stop)) {
        long v = atomic_load(&counter);
        if (v & 1) atomic_store(&counter, v + 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    double seconds = atof(argv[1]);
    int a = atoi(argv[2]), b = atoi(argv[3]);
    pthread_t thread;
    pin(a);
    pthread_create(&thread, NULL, pong, &b);
    double end = now() + seconds;
    while (now() < end) {
        double start = now();
        long trips = 0;
        while (now() - start < 0.05) {
            for (int i = 0; i < 200; i++) {
                long v = atomic_load(&counter) + 1;
                atomic_store(&counter, v);
                while (atomic_load(&counter) == v) {}
            }
            trips += 200;
        }
        printf("%.1f\n", (now() - start) / trips * 1e9);
        fflush(stdout);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    return 0;
}
"""


def _binary(cache: Path) -> Path | None:
    """The compiled probe, built once per source text; None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    exe = cache / f"core_latency-{hashlib.sha256(SOURCE.encode()).hexdigest()[:12]}"
    if not exe.exists():
        cache.mkdir(parents=True, exist_ok=True)
        src = exe.with_suffix(".c")
        src.write_text(SOURCE, encoding="utf-8")
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([compiler, "-O2", "-pthread", str(src), "-o", str(tmp)], capture_output=True, check=False)
        if done.returncode != 0:
            return None
        tmp.replace(exe)
    return exe


def windows_ns(seconds: float, cache: Path | None = None) -> list[float]:
    """Round trip between the first two usable CPUs, one figure per 50 ms window; [] when it cannot be measured."""
    from .run import DEFAULT_CACHE

    cpus = sorted(os.sched_getaffinity(0))
    exe = _binary(cache or DEFAULT_CACHE)
    if exe is None or len(cpus) < 2:
        return []
    done = subprocess.run(
        [str(exe), str(seconds), str(cpus[0]), str(cpus[1])],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    return [float(x) for x in done.stdout.split()] if done.returncode == 0 else []


def round_trip_ns(seconds: float = 0.1, cache: Path | None = None) -> float | None:
    """The median round trip over `seconds`, or None when it cannot be measured here."""
    figures = windows_ns(seconds, cache)
    return statistics.median(figures) if figures else None


def phase_of(ns: float | None) -> str | None:
    return None if ns is None else "near" if ns < NEAR_NS else "far"


def wait_for(phase: str, timeout: float, cache: Path | None = None) -> float | None:
    """Poll until the round trip is in `phase` ("near" or "far") or `timeout` seconds have passed; the last
    figure (None when it cannot be measured, and then there is nothing to wait for)."""
    end = time.monotonic() + timeout
    while True:
        ns = round_trip_ns(0.1, cache)
        if ns is None or phase_of(ns) == phase or time.monotonic() > end:
            return ns
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    from .models import cpu_flags

    cpu = cpu_flags()
    print(cpu["model"], os.cpu_count(), "cores, flags:", " ".join(f for f, on in cpu["flags"].items() if on))
    figures = windows_ns(args.seconds)
    if not figures:
        print("cannot measure here: no C compiler (cc) or fewer than two CPUs")
        return 1
    print("round trip between two CPUs, ns per 50 ms window:")
    print(" ".join(f"{x:.0f}" for x in figures))
    print(f"median {statistics.median(figures):.0f} ns, min {min(figures):.0f}, max {max(figures):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
