"""Decode + preprocess of a large JPEG: the naive full-resolution path vs reduced-scale decode, side by side.

    python bench/decode_speed.py [--size 1920x1080] [--repeats 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving_overhead import make_jpeg
from edge_daemon.images.decode import decode_image_bytes
from edge_daemon.processing.preprocess import Preprocessor, PreprocSwitches


def median_ms(call, repeats: int) -> float:
    call()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    jpeg = make_jpeg(width, height, seed=3)
    switches = PreprocSwitches()
    print(f"{width}x{height} JPEG, {len(jpeg)} bytes\n")
    print("| network | naive ms | reduced ms | reduced / naive |")
    print("|---|---|---|---|")
    for network in (320, 640):
        preprocessor = Preprocessor({"resize": {"width": network, "height": network,
                                                "format": "Fit (grey edges) in"}}, network, network)
        target = preprocessor.decode_target(switches)

        def naive(p=preprocessor) -> None:
            image, _ = p.prepare(decode_image_bytes(jpeg), switches)
            p.to_tensor([image])

        def reduced(p=preprocessor, t=target) -> None:
            image, _ = p.prepare(decode_image_bytes(jpeg, target=t), switches)
            p.to_tensor([image])

        naive_ms, reduced_ms = median_ms(naive, args.repeats), median_ms(reduced, args.repeats)
        print(f"| {network} | {naive_ms:.2f} | {reduced_ms:.2f} | {reduced_ms / naive_ms:.2f} |")
        print(json.dumps({"bench": "decode_speed", "image": args.size, "network": network,
                          "naive_ms": round(naive_ms, 2), "reduced_ms": round(reduced_ms, 2)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
