#!/usr/bin/env python3
"""The plain plate pipeline in Python, as a peer for the Rust one (bench `plates_real`).

The same models and ONNX Runtime: clp_det over the whole photo at full resolution, the best
plate's four corners warped to a 168x48 crop, PP-OCRv4 reading it resized to height 48
(no padding), greedy CTC, separators dropped, O->0 and I->1 after the second character.
No fusion, no rules, no second reader. Prints JSON: per set the exact reads and the
per-plate latency (detect + warp + read, JPEG decoding excluded) p50 / p99 in ms. Each
whole photo is timed `--rounds` times and its median kept (the Rust bench does the same).

    plain_plates.py --data DIR --models DIR [--threads 1] [--rounds 5]
"""
import argparse
import json
import os
import time

import cv2
import numpy as np
import onnxruntime as ort

PROVINCES = "皖 沪 津 渝 冀 晋 蒙 辽 吉 黑 苏 浙 京 闽 赣 鲁 豫 鄂 湘 粤 桂 琼 川 贵 云 藏 陕 甘 青 宁 新 警 学 O".split()
ALNUM = "A B C D E F G H J K L M N P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 O".split()
SEPARATORS = set("·•. -_:'\",、。・")


def ccpd_text(name):
    idx = [int(i) for i in name.split("-")[4].split("_")]
    second = ALNUM[idx[1]] if idx[1] < 24 else "O"
    return PROVINCES[idx[0]] + second + "".join(ALNUM[i] for i in idx[2:])


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def priors(w, h):
    out = []
    for step, sizes in ((8, (24, 48)), (16, (96, 192)), (32, (384, 768))):
        fh, fw = -(-h // step), -(-w // step)
        for i in range(fh):
            for j in range(fw):
                for s in sizes:
                    out.append(((j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h))
    return np.array(out, np.float32)


class Plain:
    def __init__(self, models, threads):
        self.det = session(os.path.join(models, "clp_det.onnx"), threads)
        self.rec = session(os.path.join(models, "ch_PP-OCRv4_rec_infer.onnx"), threads)
        meta = self.rec.get_modelmeta().custom_metadata_map
        self.classes = [""] + meta["character"].splitlines() + [" "]
        self.priors = {}

    def detect(self, img):
        h, w = img.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((ph, pw, 3), np.float32)
        x[:h, :w] = img.astype(np.float32) - np.array([104, 117, 123], np.float32)
        loc, conf, lm = self.det.run(None, {"image": x.transpose(2, 0, 1)[None]})
        if (pw, ph) not in self.priors:
            self.priors[(pw, ph)] = priors(pw, ph)
        pr = self.priors[(pw, ph)]
        scores = conf[0][:, 1]
        k = int(scores.argmax())
        if scores[k] < 0.5:
            return None
        l, p = lm[0][k], pr[k]
        pts = [((p[0] + l[2 * i] * 0.1 * p[2]) * pw, (p[1] + l[2 * i + 1] * 0.1 * p[3]) * ph) for i in range(4)]
        br, bl, tl, tr = pts
        return np.float32([tl, tr, br, bl])

    def read(self, crop):
        h = 48
        w = min(320, max(8, round(crop.shape[1] * h / crop.shape[0])))
        x = (cv2.resize(crop, (w, h)).astype(np.float32) / 255.0 - 0.5) / 0.5
        out = self.rec.run(None, {"x": x.transpose(2, 0, 1)[None]})[0][0]
        text, prev = "", 0
        for i in out.argmax(1):
            if i != 0 and i != prev:
                text += self.classes[i]
            prev = i
        text = "".join(c for c in text if c not in SEPARATORS).upper()
        return text[:2] + text[2:].replace("O", "0").replace("I", "1")

    def photo(self, img):
        quad = self.detect(img)
        if quad is None:
            return ""
        m = cv2.getPerspectiveTransform(quad, np.float32([[0, 0], [168, 0], [168, 48], [0, 48]]))
        return self.read(cv2.warpPerspective(img, m, (168, 48)))


def score(items, fn, rounds=1):
    exact, times = 0, []
    for label, img in items:
        took = []
        for r in range(rounds):
            t0 = time.perf_counter()
            read = fn(img)
            took.append((time.perf_counter() - t0) * 1000)
            if r == 0:
                text = read
        times.append(sorted(took)[len(took) // 2])
        exact += text == label
    times.sort()
    rank = lambda p: times[max(1, min(len(times), int(np.ceil(p / 100 * len(times))))) - 1] if times else 0
    return {"exact": exact, "total": len(items), "p50_ms": rank(50), "p99_ms": rank(99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    plain = Plain(a.models, a.threads)
    load = lambda p: cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR)
    crops_dir = os.path.join(a.data, "crops")
    crops = [(f[:-4], load(os.path.join(crops_dir, f))) for f in sorted(os.listdir(crops_dir)) if f.endswith(".jpg")]
    scenes_dir = os.path.join(a.data, "scenes")
    scenes = []
    if os.path.isdir(scenes_dir):
        scenes = [(ccpd_text(f), load(os.path.join(scenes_dir, f))) for f in sorted(os.listdir(scenes_dir)) if f.endswith(".jpg")]
    print(json.dumps({"crops": score(crops, plain.read), "scenes": score(scenes, plain.photo, max(1, a.rounds))}))


if __name__ == "__main__":
    main()
