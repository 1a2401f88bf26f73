#!/usr/bin/env python3
"""How far the INT8 detector (models/yolov8n-int8.toml) agrees with the FP32 one, and how fast
each runs model-only, on real images: frames of vtest.avi (a real campus video) and the real
CCPD vehicle photos of shared/data/real-plates/scenes (when present; none of them was used to
calibrate the INT8 model). Same letterbox, decoding and NMS as benches/python/plain_detect.py.

A detection of one model is matched by one of the other of the same class with IoU >= 0.5.
Prints JSON. Run with the cache's venv:

    .cache/venv/bin/python benches/python/int8_agreement.py --models .cache/models \
        --video .cache/media/vtest.avi [--scenes ../shared/data/real-plates/scenes] [--frames 300]
"""
import argparse
import glob
import json
import os
import sys
import time

import cv2
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plain_detect import decode, iou, letterbox  # noqa: E402

VEHICLES = {2, 3, 5, 7}  # car, motorcycle, bus, truck


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def matched(da, db):
    used, m = set(), 0
    for c, _, bx in da:
        for j, (c2, _, b2) in enumerate(db):
            if j not in used and c2 == c and iou(bx, b2) >= 0.5:
                used.add(j)
                m += 1
                break
    return m


def agreement(images, a, b, floor):
    out = {"images": len(images), "fp32": 0, "int8": 0, "matched": 0,
           "with_vehicle_fp32": 0, "with_vehicle_int8": 0}
    for x, scale, x0, y0 in images:
        da = [d for d in decode(a.run(None, {"images": x})[0], scale, x0, y0) if d[1] >= floor]
        db = [d for d in decode(b.run(None, {"images": x})[0], scale, x0, y0) if d[1] >= floor]
        out["fp32"] += len(da)
        out["int8"] += len(db)
        out["matched"] += matched(da, db)
        out["with_vehicle_fp32"] += any(c in VEHICLES for c, _, _ in da)
        out["with_vehicle_int8"] += any(c in VEHICLES for c, _, _ in db)
    out["matched_of_fp32"] = round(out["matched"] / max(out["fp32"], 1), 4)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--scenes")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    a = session(os.path.join(args.models, "yolov8n.onnx"), args.threads)
    b = session(os.path.join(args.models, "yolov8n-int8.onnx"), args.threads)
    cap = cv2.VideoCapture(args.video)
    frames = []
    while len(frames) < args.frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(letterbox(f))
    for s in (a, b):
        for x in frames[:5]:
            s.run(None, {"images": x[0]})
    fps = {"fp32": [], "int8": []}
    for _ in range(args.rounds):
        for name, s in (("fp32", a), ("int8", b)):
            t = time.perf_counter()
            for x in frames:
                s.run(None, {"images": x[0]})
            fps[name].append(len(frames) / (time.perf_counter() - t))
    ratios = sorted(i / f for f, i in zip(fps["fp32"], fps["int8"]))
    report = {
        "model_only_fps": fps,
        "median_int8_over_fp32": ratios[len(ratios) // 2],
        "vtest": {str(floor): agreement(frames, a, b, floor) for floor in (0.25, 0.4)},
    }
    if args.scenes and os.path.isdir(args.scenes):
        scenes = [letterbox(cv2.imread(p)) for p in sorted(glob.glob(os.path.join(args.scenes, "*.jpg")))]
        report["real_plates_scenes"] = {str(floor): agreement(scenes, a, b, floor) for floor in (0.25, 0.4)}
    else:
        report["real_plates_scenes"] = "absent (pass --scenes)"
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
