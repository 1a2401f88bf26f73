#!/usr/bin/env python3
"""The plain detection pipeline in Python, as a peer for the Rust one (bench `e2e`).

The same YOLOv8n file and ONNX Runtime, as a Python user would write it: OpenCV decodes the
video, letterbox to 640x640 (pad 114, bilinear), one inference per frame, YOLOv8 decoding
(score >= 0.25), per-class NMS at IoU 0.45 (OpenCV), and a plain IoU tracker (greedy by IoU
>= 0.3 within a class, a track confirmed after 3 matched frames, started from a detection
scoring >= 0.6, ended after 3 s unmatched). One loop, nothing overlapped. Prints JSON: frames,
frames per second over the loop (decode included), detections and confirmed tracks per class.

    plain_detect.py --video FILE --model FILE [--frames N] [--threads 2] [--classes person,car]
"""
import argparse
import json
import time

import cv2
import numpy as np
import onnxruntime as ort

SIZE = 640


def letterbox(frame):
    h, w = frame.shape[:2]
    scale = min(SIZE / w, SIZE / h)
    nw, nh = round(w * scale), round(h * scale)
    px, py = (SIZE - nw) / 2, (SIZE - nh) / 2
    out = np.full((SIZE, SIZE, 3), 114, np.uint8)
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x0, y0 = int(round(px - 0.1)), int(round(py - 0.1))
    out[y0:y0 + nh, x0:x0 + nw] = resized
    rgb = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    tensor = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor), scale, x0, y0


def decode(output, scale, x0, y0, score_min=0.25, iou=0.45):
    pred = output[0].T  # anchors x (4 + classes)
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= score_min
    pred, cls, best = pred[keep], cls[keep], best[keep]
    if len(best) == 0:
        return []
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    x1 = (cx - w / 2 - x0) / scale
    y1 = (cy - h / 2 - y0) / scale
    boxes = np.stack([x1, y1, w / scale, h / scale], 1)
    idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), best.tolist(), cls.tolist(), score_min, iou)
    out = []
    for i in np.array(idx).reshape(-1):
        x, y, bw, bh = boxes[i]
        out.append((int(cls[i]), float(best[i]), (x, y, x + bw, y + bh)))
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    def __init__(self, confirm=3, new_score=0.6, lost_ms=3000, min_iou=0.3):
        self.tracks = []  # dicts: cls, box, hits, confirmed, last_ms
        self.confirm, self.new_score, self.lost_ms, self.min_iou = confirm, new_score, lost_ms, min_iou
        self.confirmed = {}

    def update(self, dets, t_ms):
        pairs = sorted(
            ((iou(t["box"], d[2]), ti, di)
             for ti, t in enumerate(self.tracks) for di, d in enumerate(dets) if t["cls"] == d[0]),
            reverse=True)
        used_t, used_d = set(), set()
        for v, ti, di in pairs:
            if v < self.min_iou:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            t = self.tracks[ti]
            t["box"], t["last_ms"] = dets[di][2], t_ms
            t["hits"] += 1
            if not t["confirmed"] and t["hits"] >= self.confirm:
                t["confirmed"] = True
                self.confirmed[t["cls"]] = self.confirmed.get(t["cls"], 0) + 1
        kept = []
        for ti, t in enumerate(self.tracks):
            if ti in used_t:
                kept.append(t)
            elif t["confirmed"] and t_ms - t["last_ms"] <= self.lost_ms:
                kept.append(t)
            elif not t["confirmed"]:
                pass  # a tentative track dies unmatched
        self.tracks = kept
        for di, d in enumerate(dets):
            if di not in used_d and d[1] >= self.new_score:
                self.tracks.append({"cls": d[0], "box": d[2], "hits": 1, "confirmed": False, "last_ms": t_ms})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", default="person,bicycle,car,motorcycle,bus,truck")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    names = eval(sess.get_modelmeta().custom_metadata_map["names"])  # {0: 'person', ...}
    wanted = {i for i, n in names.items() if n in a.classes.split(",")}
    cap = cv2.VideoCapture(a.video)
    fps_src = cap.get(cv2.CAP_PROP_FPS) or 10.0
    # Warm-up on the first frame (ONNX Runtime allocates its buffers), then rewind.
    ok, frame = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {a.video}")
    sess.run(None, {"images": letterbox(frame)[0]})
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    tracker = Tracker()
    dets_per_class = {}
    n = 0
    t0 = time.perf_counter()
    while not a.frames or n < a.frames:
        ok, frame = cap.read()
        if not ok:
            break
        tensor, scale, x0, y0 = letterbox(frame)
        out = sess.run(None, {"images": tensor})[0]
        dets = decode(out, scale, x0, y0)
        for c, _, _ in dets:
            dets_per_class[names[c]] = dets_per_class.get(names[c], 0) + 1
        tracker.update([d for d in dets if d[0] in wanted], int(n * 1000 / fps_src))
        n += 1
    secs = time.perf_counter() - t0
    print(json.dumps({
        "frames": n,
        "fps": n / secs if secs > 0 else 0.0,
        "detections_per_class": dets_per_class,
        "confirmed_tracks_per_class": {names[c]: k for c, k in sorted(tracker.confirmed.items())},
    }))


if __name__ == "__main__":
    main()
