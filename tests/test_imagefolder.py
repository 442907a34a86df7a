import numpy as np
import pytest
from PIL import Image

from minisnn import imagefolder


def _folder(tmp_path, sizes=((300, 260), (260, 500)), classes=("n01", "n02", "n03")):
    rng = np.random.default_rng(0)
    for c in classes:
        (tmp_path / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / c / f"img{i}.png")
    return tmp_path


def test_preprocess_is_the_standard_eval_transform():
    """Resize the shorter side to 256 (bilinear), centre-crop 224, normalise: checked
    against the same steps written out with PIL and numpy."""
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    x = imagefolder.preprocess(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    resized = np.asarray(image.resize((341, 256), Image.BILINEAR), np.float32) / 255
    crop = resized[16:240, 58:282]
    ref = ((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-6)


def test_batches_stream_every_image_in_class_order(tmp_path):
    root = _folder(tmp_path)
    seen = list(imagefolder.batches(root, batch_size=4))
    assert [len(y) for _, y in seen] == [4, 2]
    labels = np.concatenate([y for _, y in seen])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    assert all(x.shape[1:] == (3, 224, 224) for x, _ in seen)
    limited = np.concatenate([y for _, y in imagefolder.batches(root, 10, limit=1)])
    np.testing.assert_array_equal(limited, [0, 1, 2])
    assert imagefolder.looks_like_image_folder(root)


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        imagefolder.list_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class subfolders"):
        imagefolder.list_images(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class: class folder without images"):
        imagefolder.list_images(tmp_path)
    (tmp_path / "empty_class" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="x.jpg: not a readable image"):
        next(imagefolder.batches(tmp_path))


def test_infer_runs_a_converted_imagenet_model_on_a_folder(tmp_path, capsys):
    """python -m minisnn.infer MODEL --data DIR: a converted (reduced-width) ResNet-18
    on an ImageNet-style folder, top-1 and top-5, integer logits equal to the float's."""
    import json
    from pathlib import Path

    from minisnn import convert, infer
    fixture = Path(__file__).parent / "fixtures" / "reactnet_tau5.legacy.pth"
    model = tmp_path / "model.npz"
    assert convert.main([str(fixture), "--out", str(model)]) == 0
    root = _folder(tmp_path / "val", classes=[f"c{i}" for i in range(10)])
    capsys.readouterr()
    assert infer.main([str(model), "--data", str(root), "--batch-size", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 20 and result["exactly_equal_logits"] == 20
    assert 0 <= result["int_accuracy"] <= result["int_top5_accuracy"] <= 1
    assert infer.main([str(model), "--data", str(root), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "top-5 accuracy" in out and "test images          10" in out
    assert infer.main([str(model)]) == 2
    assert "needs --data DIR" in capsys.readouterr().err
