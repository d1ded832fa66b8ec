"""Decode + preprocess of a large JPEG: the naive full-resolution path vs reduced-scale decode, side by side.

    python bench/decode_speed.py [--size 1920x1080] [--repeats 40] [--qualities 70,80,90,95]

Three paths, timed alternately call by call so that load from other processes hits all alike:
- "daemon": what the daemon does. A JPEG much larger than the network input is decoded at 1/2, 1/4 or 1/8
  scale in the DCT domain, then one fused resize + pad + layout + normalise.
- "naive, own preprocess": every pixel decoded, then the daemon's own fused preprocessing (the strict
  baseline: it isolates what reduced decoding alone saves).
- "naive, textbook": every pixel decoded, then the classic steps one by one as Roboflow's classic stack
  documents them (resize, copyMakeBorder, BGR->RGB, HWC->CHW, float32, /255).

How much reduced decoding can save depends on the file: Huffman (entropy) decoding of every coefficient
cannot be skipped at any scale, and its share grows with the bits per pixel. So each scene is encoded at
several qualities and the table shows bits per pixel and the 1/8-scale decode time (nearly pure entropy
decoding) as a share of the full decode: that share is the floor for any DCT-scaling strategy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_daemon.images.decode import decode_image_bytes
from edge_daemon.processing.preprocess import Preprocessor, PreprocSwitches
from edge_daemon.scenes import encode_jpeg, generate_scene


def interleaved_medians(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each call, running them in turn so drift and contention hit all alike."""
    for call in calls.values():
        call()
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in timings.items()}


def preprocessor_for(network: int) -> Preprocessor:
    resize = {"width": network, "height": network, "format": "Fit (grey edges) in"}
    return Preprocessor({"resize": resize}, network, network)


def textbook_letterbox_tensor(image: np.ndarray, network: int) -> np.ndarray:
    """The classic preprocessing, step by step: each step makes its own array."""
    height, width = image.shape[:2]
    scale = min(network / width, network / height)
    new_width, new_height = round(width * scale), round(height * scale)
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, left = (network - new_height) // 2, (network - new_width) // 2
    padded = cv2.copyMakeBorder(resized, top, network - new_height - top, left, network - new_width - left,
                                cv2.BORDER_CONSTANT, value=(114, 114, 114))
    rgb = cv2.cvtColor(padded, cv2.COLOR_BGR2RGB)
    tensor = np.transpose(rgb, (2, 0, 1)).astype(np.float32)
    tensor /= 255.0
    return np.expand_dims(tensor, 0)


def measure(jpeg: bytes, network: int, repeats: int) -> dict[str, float]:
    switches = PreprocSwitches()
    preprocessor = preprocessor_for(network)
    target = preprocessor.decode_target(switches)
    encoded = np.frombuffer(jpeg, np.uint8)

    def naive() -> None:
        image, _ = preprocessor.prepare(decode_image_bytes(jpeg), switches)
        preprocessor.to_tensor([image])

    def reduced() -> None:
        image, _ = preprocessor.prepare(decode_image_bytes(jpeg, target=target), switches)
        preprocessor.to_tensor([image])

    return interleaved_medians({
        "naive": naive,
        "textbook": lambda: textbook_letterbox_tensor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), network),
        "reduced": reduced,
        "decode_full": lambda: cv2.imdecode(encoded, cv2.IMREAD_COLOR),
        "decode_eighth": lambda: cv2.imdecode(encoded, cv2.IMREAD_REDUCED_COLOR_8),
    }, repeats)


def layout_comparison(network: int, repeats: int) -> dict[str, float]:
    """The tensor layout step alone: the daemon's converting copy against cv2.dnn.blobFromImages."""
    preprocessor = preprocessor_for(network)
    image = np.random.default_rng(0).integers(0, 256, (network, network, 3), dtype=np.uint8)
    return interleaved_medians({
        "daemon": lambda: preprocessor.to_tensor([image]),
        "blobFromImages": lambda: cv2.dnn.blobFromImages([image], scalefactor=1 / 255.0, swapRB=True, crop=False),
    }, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--seeds", default="3,11", help="scene seeds (each has its own sensor-noise level)")
    parser.add_argument("--qualities", default="70,80,90,95")
    parser.add_argument("--networks", default="320,640")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{width}x{height} JPEG, decode + preprocess, median of {args.repeats} interleaved runs\n")
    print("| scene | quality | KB | bits/px | network | daemon ms | naive (own preprocess) ms | daemon / that "
          "| naive (textbook) ms | daemon / that | floor: 1/8 decode / full decode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        image = generate_scene(seed, width, height).image
        for quality in (int(q) for q in args.qualities.split(",")):
            jpeg = encode_jpeg(image, quality)
            bits_per_pixel = len(jpeg) * 8 / (width * height)
            for network in (int(n) for n in args.networks.split(",")):
                ms = measure(jpeg, network, args.repeats)
                ratio, floor = ms["reduced"] / ms["naive"], ms["decode_eighth"] / ms["decode_full"]
                textbook_ratio = ms["reduced"] / ms["textbook"]
                print(f"| {seed} | {quality} | {len(jpeg) / 1000:.0f} | {bits_per_pixel:.2f} | {network} "
                      f"| {ms['reduced']:.2f} | {ms['naive']:.2f} | {ratio:.2f} | {ms['textbook']:.2f} "
                      f"| {textbook_ratio:.2f} | {floor:.2f} |", flush=True)
                print(json.dumps({"bench": "decode_speed", "image": args.size, "seed": seed, "quality": quality,
                                  "bytes": len(jpeg), "bits_per_pixel": round(bits_per_pixel, 3),
                                  "network": network, **{f"{k}_ms": round(v, 3) for k, v in ms.items()},
                                  "reduced_over_naive": round(ratio, 3),
                                  "reduced_over_textbook": round(textbook_ratio, 3)}), file=sys.stderr)
    print("\n| network | layout: daemon ms | cv2.dnn.blobFromImages ms | daemon / that |\n|---|---|---|---|")
    for network in (int(n) for n in args.networks.split(",")):
        ms = layout_comparison(network, args.repeats * 5)
        print(f"| {network} | {ms['daemon']:.3f} | {ms['blobFromImages']:.3f} "
              f"| {ms['daemon'] / ms['blobFromImages']:.2f} |")
        print(json.dumps({"bench": "tensor_layout", "network": network,
                          **{f"{k}_ms": round(v, 4) for k, v in ms.items()}}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
