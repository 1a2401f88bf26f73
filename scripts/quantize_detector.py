#!/usr/bin/env python3
"""Makes the INT8 variant of the YOLOv8n detector (models/yolov8n-int8.toml), run by setup.sh.

Static quantization by ONNX Runtime's own tool, QDQ format: weights signed 8-bit per output
channel, activations unsigned 8-bit per tensor, ranges by min/max over calibration frames.
The detection head's last convolutions and everything after them (box distribution, class
sigmoid, the output concatenation) stay in FP32: box coordinates and scores come out as
precise as the FP32 model makes them; only the backbone, neck and the head's inner
convolutions run in 8 bits.

Calibration frames are the sample media setup installs, letterboxed exactly as the edge node
does (640x640, pad 114, RGB, /255): 48 frames spread over vtest.avi (a real campus video:
people, a few cars) and the two real vehicle photos (bus.jpg, dog.jpg). The quantizer is
deterministic for the same inputs and versions: setup checks the result's sha256 against the
manifest and refuses a file that differs.

    quantize_detector.py --model yolov8n.onnx --media DIR --out yolov8n-int8.onnx
"""
import argparse
import math
import os
import re
import sys
import tempfile

import cv2
import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import (
    TensorData,
    TensorsData,
    load_tensors_data,
    save_tensors_data,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

SIZE = 640
VIDEO_FRAMES = 48
# The head's inner convolutions (cv2.i.0/1, cv3.i.0/1) are quantized; its last convolutions
# and everything after them are not.
HEAD = "/model.22/"
HEAD_INNER = re.compile(r"^/model\.22/cv[23]\.\d/cv[23]\.\d\.[01]/")


def letterbox(bgr):
    h, w = bgr.shape[:2]
    scale = min(SIZE / w, SIZE / h)
    nw, nh = round(w * scale), round(h * scale)
    out = np.full((SIZE, SIZE, 3), 114, np.uint8)
    resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x0, y0 = (SIZE - nw) // 2, (SIZE - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    rgb = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray((rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def calibration_frames(media):
    video = os.path.join(media, "vtest.avi")
    cap = cv2.VideoCapture(video)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if total <= 0:
        sys.exit(f"cannot read {video}: run scripts/setup.sh, which installs it")
    wanted = {round(i * (total - 1) / (VIDEO_FRAMES - 1)) for i in range(VIDEO_FRAMES)}
    frames = []
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            frames.append(letterbox(frame))
        i += 1
    for name in ("bus.jpg", "dog.jpg"):
        img = cv2.imread(os.path.join(media, name))
        if img is None:
            sys.exit(f"cannot read {os.path.join(media, name)}: run scripts/setup.sh")
        frames.append(letterbox(img))
    if len(frames) != VIDEO_FRAMES + 2:
        sys.exit(f"expected {VIDEO_FRAMES + 2} calibration frames, got {len(frames)}")
    return frames


def snapped(lo, hi):
    """The range widened outward to multiples of 2^(e - 10), e the exponent of its magnitude."""
    m = max(abs(lo), abs(hi), 1e-12)
    q = 2.0 ** (math.floor(math.log2(m)) - 10)
    return math.floor(lo / q) * q, math.ceil(hi / q) * q


class Frames(CalibrationDataReader):
    def __init__(self, input_name, frames):
        self.items = iter([{input_name: f} for f in frames])

    def get_next(self):
        return next(self.items, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--media", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import onnx

    frames = calibration_frames(args.media)
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        # Shape inference and graph fusions first, as ONNX Runtime recommends before
        # quantizing (no symbolic shape inference: every shape here is static).
        quant_pre_process(args.model, pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
        exclude = [
            n.name
            for n in model.graph.node
            if n.name.startswith(HEAD) and not HEAD_INNER.match(n.name)
        ]
        input_name = model.graph.input[0].name
        options = dict(
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
        )
        # First pass: the activation ranges over the calibration frames (kept in a cache).
        measured = os.path.join(tmp, "ranges.json")
        quantize_static(pre, os.path.join(tmp, "first.onnx"), Frames(input_name, frames),
                        calibration_cache_path=measured, **options)
        ranges = load_tensors_data(measured)
        snapped_ranges = {}
        for name, data in ranges.data.items():
            lo, hi = (np.asarray(v, np.float32) for v in data.range_value)
            # Per tensor (one value), or per channel (an array): each value snapped.
            pairs = [snapped(float(a), float(b)) for a, b in zip(lo.ravel(), hi.ravel())]
            snapped_ranges[name] = TensorData(
                lowest=np.array([p[0] for p in pairs], np.float32).reshape(lo.shape),
                highest=np.array([p[1] for p in pairs], np.float32).reshape(hi.shape),
            )
        fixed = os.path.join(tmp, "snapped.json")
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, snapped_ranges), fixed)
        # Second pass: quantized with the snapped ranges.
        quantize_static(pre, args.out, None, calibration_cache_path=fixed, **options)
    print(f"wrote {args.out} ({len(exclude)} head nodes kept in FP32)", file=sys.stderr)


if __name__ == "__main__":
    main()
