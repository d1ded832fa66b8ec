"""A few training steps on tiny data learn something and export the declared ONNX layouts."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from tools import train_models as tm
from tools.shapes_data import build_cls_dataset, build_det_dataset
from tools.shapes_layout import DET_SIZE, PROTO_SIZE, STRIDES

ANCHORS = sum((DET_SIZE // stride) ** 2 for stride in STRIDES)


@pytest.fixture(scope="module", autouse=True)
def _torch_setup() -> None:
    tm.setup_torch(2)


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs))


def _check_onnx(path: Path, size: int, expected: dict[str, list[int]]) -> None:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "images" and inp.shape == ["batch", 3, size, size]
    assert {o.name: o.shape for o in sess.get_outputs()} == {k: ["batch", *v] for k, v in expected.items()}
    outs = sess.run(None, {"images": np.zeros((2, 3, size, size), np.float32)})
    for out, shape in zip(outs, expected.values(), strict=True):
        assert out.shape == (2, *shape) and out.dtype == np.float32


def test_detector_trains_and_exports(tmp_path: Path) -> None:
    data = build_det_dataset(list(range(500_000, 500_008)), workers=1)
    model, losses = tm.train_detector(data, iters=30, batch_size=4, lr=2e-3, log_every=0)
    assert all(np.isfinite(losses))
    assert _mean(losses[-5:]) < 0.8 * _mean(losses[:5])
    tm.export_detector(model, tmp_path / "seg.onnx", with_masks=True)
    tm.export_detector(model, tmp_path / "det.onnx", with_masks=False)
    _check_onnx(tmp_path / "seg.onnx", DET_SIZE, {"output0": [40, ANCHORS], "output1": [32, PROTO_SIZE, PROTO_SIZE]})
    _check_onnx(tmp_path / "det.onnx", DET_SIZE, {"output0": [8, ANCHORS]})
    # The detection export is the same network minus the mask branch.
    x = np.random.default_rng(0).random((1, 3, DET_SIZE, DET_SIZE), dtype=np.float32)
    seg = ort.InferenceSession(str(tmp_path / "seg.onnx")).run(None, {"images": x})[0]
    det = ort.InferenceSession(str(tmp_path / "det.onnx")).run(None, {"images": x})[0]
    np.testing.assert_allclose(seg[:, :8], det, rtol=1e-4, atol=1e-3)


def test_saved_weights_continue_training(tmp_path: Path) -> None:
    """--save-state / --init-state: a run continues from the saved weights, not from scratch."""
    data = build_det_dataset(list(range(500_100, 500_104)), workers=1)
    model, _ = tm.train_detector(data, iters=6, batch_size=2, log_every=0)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = tm.train_detector(data, iters=1, batch_size=2, log_every=0)[1]
    continued = tm.train_detector(data, iters=1, batch_size=2, log_every=0, init_state=state)[1]
    assert continued[0] < fresh[0]


def test_training_is_deterministic() -> None:
    data = build_det_dataset(list(range(500_100, 500_104)), workers=1)
    a = tm.train_detector(data, iters=4, batch_size=2, log_every=0)[1]
    b = tm.train_detector(data, iters=4, batch_size=2, log_every=0)[1]
    assert a == b


def test_classifier_trains_and_exports(tmp_path: Path) -> None:
    data = build_cls_dataset(list(range(500_000, 500_032)), workers=1)
    model, losses = tm.train_classifier(data, iters=25, batch_size=16, lr=1e-3, log_every=0)
    assert all(np.isfinite(losses))
    assert _mean(losses[-5:]) < _mean(losses[:5])
    tm.export_classifier(model, tmp_path / "cls.onnx")
    _check_onnx(tmp_path / "cls.onnx", 128, {"output0": [4]})


def test_model_dir_metadata(tmp_path: Path) -> None:
    (tmp_path / "weights.onnx").write_bytes(b"not really onnx")
    resize = {"width": 128, "height": 128, "format": "Stretch to"}
    tm.write_model_dir(tmp_path, "shapes-cls/1", "classification", "shapes-cls-n", resize)
    import json

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["weights.onnx"] == tm.sha256_file(tmp_path / "weights.onnx")
    config = json.loads((tmp_path / "inference_config.json").read_text())
    assert config["network_input"]["normalization"] == [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    assert config["post_processing"] == {"type": "softmax", "fused": False}
    assert set(manifest["files"]) == {"weights.onnx", "inference_config.json", "model_config.json",
                                      "class_names.txt"}


def test_pose_model_from_detector_trains_and_exports(tmp_path: Path) -> None:
    """Pose mode: the shapes/1 detector read back from ONNX, plus a keypoint branch trained on its neck windows."""
    from tools.pose_training import build_windows, train_keypoint_head
    from tools.shapes_nets import ExportDetect, ShapesDetector, flatten_keypoints, make_anchors

    detector = Path(tm.__file__).resolve().parent.parent / "edge_daemon" / "default_models" / "shapes" / "1" / "weights.onnx"
    model = ShapesDetector(nm=0, nk=5)
    missing, unexpected = model.load_state_dict(tm.state_from_onnx(detector, model), strict=False)
    assert not unexpected and missing and all(k.startswith("kpt.") for k in missing)
    x = np.random.default_rng(1).random((1, 3, DET_SIZE, DET_SIZE), dtype=np.float32)
    with torch.no_grad():
        ours = ExportDetect(model.eval(), False)(torch.from_numpy(x)).numpy()
    shipped = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(ours[:, :8], shipped, rtol=1e-4, atol=1e-3)  # same detector, BatchNorm folded

    data = build_windows(detector, list(range(500_000, 500_004)), workers=1, log=lambda _: None)
    assert len(data["windows"]) > 20 and data["windows"].shape[1:] == (48, 5, 5)  # two 3x3 convs: 5x5
    assert set(np.unique(data["keypoints"][..., 2])) <= {0.0, 1.0, 2.0}
    head, losses = train_keypoint_head(data, iters=40, batch_size=32, log_every=0)
    assert all(np.isfinite(losses)) and _mean(losses[-5:]) < 0.8 * _mean(losses[:5])
    model.kpt = head
    # Training sees windows; the export runs convolutions over whole maps: both must give the same numbers.
    with torch.no_grad():
        from tools.shapes_data import pose_sample

        image = torch.from_numpy(pose_sample(500_000)[0][None].transpose(0, 3, 1, 2).astype(np.float32) / 255)
        full = flatten_keypoints(model.eval()(image)[0])[0].reshape(ANCHORS, -1)
        one = build_windows(detector, [500_000], workers=1, log=lambda _: None)
        part = head.forward_windows(torch.from_numpy(one["windows"]).float(), torch.from_numpy(one["cells"]))
    anchors, _ = make_anchors()
    idx = [int(((anchors - a).abs().sum(1) < 1e-3).nonzero()[0]) for a in torch.from_numpy(one["anchors"])]
    np.testing.assert_allclose(full[idx].numpy(), part.numpy(), rtol=1e-3, atol=1e-3)

    tm.export_pose(model, tmp_path / "pose.onnx")
    _check_onnx(tmp_path / "pose.onnx", DET_SIZE, {"output0": [4 + 4 + 15, ANCHORS]})
    (tmp_path / "weights.onnx").write_bytes((tmp_path / "pose.onnx").read_bytes())
    resize = {"width": DET_SIZE, "height": DET_SIZE, "format": "Fit (grey edges) in"}
    tm.write_model_dir(tmp_path, "shapes-pose/1", "keypoint-detection", "shapes-pose-n", resize,
                       {"keypoints_metadata.json": tm.keypoints_metadata()})
    import json

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"weights.onnx", "environment.json", "model_type.json", "keypoints_metadata.json"}
    assert manifest["files"]["keypoints_metadata.json"] == tm.sha256_file(tmp_path / "keypoints_metadata.json")


@pytest.mark.parametrize(("depth", "fine"), [(2, 0), (3, 0), (2, 4), (3, 4)])
def test_keypoint_windows_match_full_maps(depth: int, fine: int) -> None:
    """Training on windows equals the exported full-map convolution at every cell, borders included.

    With `fine`, the stride-8 level also sees the stride-4 stem feature (a map twice as large), through
    windows cut where tools.pose_training.stem_window_start says.
    """
    from tools.pose_training import stem_window_start
    from tools.shapes_nets import KeypointHead

    torch.manual_seed(depth + fine)
    head = KeypointHead(8, 5, hidden=16, depth=depth, fine=fine).eval()
    size, half = 6, depth
    feat = torch.randn(1, 8, size, size)
    stem = torch.randn(1, fine, 2 * size, 2 * size) if fine else None
    with torch.no_grad():
        full = head(feat, stem)[0].reshape(15, -1).T  # (cells, 15)
        padded = torch.nn.functional.pad(feat, (half, half, half, half))[0]
        rows, cols = np.divmod(np.arange(size * size), size)
        windows = torch.stack([padded[:, r:r + 2 * half + 1, c:c + 2 * half + 1] for r, c in zip(rows, cols, strict=True)])
        cells = torch.from_numpy(np.stack([rows, cols, np.full_like(rows, size)], 1).astype(np.float32))
        stem_windows = None
        if stem is not None:
            w = head.fine_window
            spad = torch.nn.functional.pad(stem, (w, w, w, w))[0]
            starts = [stem_window_start(8, int(r), int(c), w) for r, c in zip(rows, cols, strict=True)]
            stem_windows = torch.stack([spad[:, r0 + w:r0 + 2 * w, c0 + w:c0 + 2 * w] for r0, c0 in starts])
        part = head.forward_windows(windows, cells, stem_windows)
    np.testing.assert_allclose(part.numpy(), full.numpy(), rtol=1e-5, atol=1e-5)


def test_whole_pose_model_fine_tunes_from_its_onnx(tmp_path: Path) -> None:
    """--pose-full: the bundled keypoint model read back from ONNX (shared branch included), fine-tuned whole
    with flips, and exported in the same layout."""
    from edge_daemon.scenes import order_keypoints
    from tools.pose_training import flip_pose_batch, train_pose_full
    from tools.shapes_data import build_pose_dataset
    from tools.shapes_nets import (
        ExportDetect,
        ShapesDetector,
        decode_keypoints,
        decode_ltrb,
        flatten_keypoints,
        flatten_levels,
        make_anchors,
    )

    shipped = Path(tm.__file__).resolve().parent.parent / "edge_daemon" / "default_models" / "shapes-pose" / "1" / "weights.onnx"
    model = ShapesDetector(nm=0, nk=5, kpt_hidden=80)
    model.load_state_dict(tm.state_from_onnx(shipped, model), strict=True)
    session = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[2]  # the weights are size-independent; the anchors are the export's
    x = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        ours = ExportDetect(model.eval(), False, size)(torch.from_numpy(x)).numpy()
    ref = session.run(None, {"images": x})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)

    data = build_pose_dataset(list(range(500_000, 500_008)), workers=1)
    flipped = {k: v.copy() for k, v in data.items()}
    flip_pose_batch(flipped, np.random.default_rng(3))
    assert any(not np.array_equal(a, b) for a, b in zip(flipped["images"], data["images"], strict=True))
    for kps, classes in zip(flipped["keypoints"], flipped["classes"], strict=True):
        for kp in kps[classes >= 0]:
            k = int((kp[:, 2] > 0).sum())
            assert np.array_equal(order_keypoints(kp[:k, :2].astype(np.float64)), np.arange(k))

    tuned, losses = train_pose_full(model, data, iters=4, batch_size=2, log_every=0)
    assert all(np.isfinite(losses))
    _, weighted = train_pose_full(model, data, iters=2, batch_size=2, log_every=0, small_px=48.0)  # --pose-small-px
    assert all(np.isfinite(weighted))
    tm.export_pose(tuned, tmp_path / "pose.onnx")
    _check_onnx(tmp_path / "pose.onnx", DET_SIZE, {"output0": [4 + 4 + 15, ANCHORS]})

    # --pose-size 512: data, anchors, loss and export at the larger input; the file stays under the 3 MB limit.
    big = build_pose_dataset(list(range(500_000, 500_002)), workers=1, size=512)
    assert big["images"].shape == (2, 512, 512, 3)
    kp, cl = big["keypoints"], big["classes"]
    assert (kp[..., :2][(kp[..., 2] > 0) & (cl >= 0)[..., None]] < 512).all()
    tuned, losses = train_pose_full(model, big, iters=1, batch_size=2, log_every=0)
    assert all(np.isfinite(losses))
    tm.export_pose(tuned, tmp_path / "pose512.onnx", 512)
    _check_onnx(tmp_path / "pose512.onnx", 512, {"output0": [4 + 4 + 15, sum((512 // s) ** 2 for s in STRIDES)]})
    assert (tmp_path / "pose512.onnx").stat().st_size <= 3_000_000
    x = np.random.default_rng(2).random((1, 3, 512, 512), dtype=np.float32)
    with torch.no_grad():  # the single-use anchor tables decode as decode_ltrb and decode_keypoints do
        outs, _ = tuned.eval()(torch.from_numpy(x))
        anchors, strides = make_anchors(512)
        cls, box, _ = flatten_levels(outs)
        xyxy = decode_ltrb(box, anchors, strides)[0]
        kxy = decode_keypoints(flatten_keypoints(outs), anchors, strides)[0]
    got = ort.InferenceSession(str(tmp_path / "pose512.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0][0].T
    np.testing.assert_allclose(got[:, :2], ((xyxy[:, :2] + xyxy[:, 2:]) / 2).numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[:, 2:4], (xyxy[:, 2:] - xyxy[:, :2]).numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[:, 8:].reshape(-1, 5, 3)[..., :2], kxy.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[:, 4:8], cls[0].sigmoid().numpy(), rtol=1e-4, atol=1e-5)
