"""GELU's two forms on the CPU: GPT-2's tanh approximation against the exact (erf) form, forward + backward.

    python bench/gelu.py [--shape 12 64 512] [--repeats 200]

The default shape is the MLP activation of the throughput bench's step (nanoGPT's CPU configuration).
Prints median milliseconds of each form and their ratio, alternating calls so load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[12, 64, 512])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    x = torch.randn(*args.shape, requires_grad=True)
    grad = torch.randn(*args.shape)
    forms = {"tanh (GPT-2)": "tanh", "exact (erf)": "none"}
    times: dict[str, list[float]] = {name: [] for name in forms}
    for i in range(args.repeats + 10):
        for name, approximate in forms.items():
            t0 = time.perf_counter()
            F.gelu(x, approximate=approximate).backward(grad)
            if i >= 10:  # the first calls warm the allocator up
                times[name].append(time.perf_counter() - t0)
            x.grad = None
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {tuple(args.shape)}")
    for name, ms in med.items():
        print(f"{name:13s} forward + backward median {ms:.3f} ms")
    print(f"tanh / exact: {med['tanh (GPT-2)'] / med['exact (erf)']:.2f}x the time")


if __name__ == "__main__":
    main()
