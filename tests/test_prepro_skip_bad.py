"""prepro_coco.py --skip_bad_images: bad images are dropped before the splits are drawn, the
splits get the counts asked for (or the run stops with one line), and the dropped files are
listed in one file, not one stdout line each (issue 13)."""

import json
import random
import shutil

import h5py
import pytest

from imcap.utils import prepro_coco
from imcap.data import sources


def tiny_coco_copy(shapes_dir, tmp_path):
    """A copy of the tiny shapes set (30 images) that a test may break; and its 30 records in
    the order prepro_coco writes them (imcap_keras' shuffle)."""
    root = tmp_path / "coco"
    shutil.copytree(shapes_dir, root)
    records = sources.load_coco(str(root))
    random.seed(123)
    random.shuffle(records)
    return root, [r["file_path"] for r in records]


def break_images(root, missing=(), corrupt=()):
    for file_path in missing:
        (root / "images" / file_path).unlink()
    for file_path in corrupt:
        (root / "images" / file_path).write_bytes(b"not a jpeg at all")


def prepro_cli(root, out, *extra):
    """Runs the command as a user would (one-line errors, exit status)."""
    prepro_coco.cli(["--coco_path", str(root), "--output_json", str(out / "d.json"),
                     "--output_h5", str(out / "d.h5"), "--imsize", "8", "--workers", "1",
                     "--word_count_threshold", "0", "--skip_bad_images", *map(str, extra)])


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_random_split_is_drawn_after_dropping(shapes_dir, tmp_path, capsys):
    root, order = tiny_coco_copy(shapes_dir, tmp_path)
    # three of the four images imcap_keras' split puts first are bad: with the split drawn before
    # dropping, val and test would get 1 and 2 images instead of 2 and 2
    missing, corrupt = [order[0], order[2], order[17]], [order[3]]
    break_images(root, missing, corrupt)
    out = tmp_path / "out"
    prepro_cli(root, out, "--num_val", 2, "--num_test", 2)
    printed = capsys.readouterr().out
    info = read_json(out / "d.json")
    kept = [im["file_path"] for im in info["images"]]
    assert kept == [p for p in order if p not in missing + corrupt]
    splits = [im["split"] for im in info["images"]]
    assert splits == ["val"] * 2 + ["test"] * 2 + ["train"] * 22
    with h5py.File(out / "d.h5", "r") as f:
        assert f["images"].shape == (26, 3, 8, 8) and len(f["label_start_ix"]) == 26
    for split in ("val", "test"):
        gt = read_json(out / f"d_{split}_gt.json")
        assert len(gt["images"]) == 2
    lines = (out / "d_dropped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(missing + corrupt)
    reasons = dict(line.split("\t") for line in lines)
    assert all(reasons[p] == "file not found" for p in missing)
    assert "cannot identify image file" in reasons[corrupt[0]]
    about = [line for line in printed.splitlines()
             if "dropped" in line and not line.startswith("wrote ")]
    assert about == [f"dropped 4 unreadable or missing images, listed in {out / 'd_dropped.txt'}"
                     "; computing the vocabulary and split again without them"]
    assert not any(p in printed for p in missing + corrupt)
    assert "assigned 2 to val, 2 to test." in printed
    assert printed.count("assigned") == 2  # drawn again once the corrupt image was found


def test_only_missing_files_cost_no_second_pass(shapes_dir, tmp_path, capsys):
    root, order = tiny_coco_copy(shapes_dir, tmp_path)
    break_images(root, missing=order[:3])
    out = tmp_path / "out"
    prepro_cli(root, out, "--num_val", 2, "--num_test", 2)
    printed = capsys.readouterr().out
    assert printed.count("assigned 2 to val, 2 to test.") == 1  # dropped before the text
    assert (f"dropped 3 unreadable or missing images, listed in {out / 'd_dropped.txt'}\n"
            in printed)
    splits = [im["split"] for im in read_json(out / "d.json")["images"]]
    assert splits == ["val"] * 2 + ["test"] * 2 + ["train"] * 23


def test_nothing_bad_gives_the_same_output_and_no_list(shapes_dir, tmp_path):
    root, _ = tiny_coco_copy(shapes_dir, tmp_path)
    outputs = {}
    for name, flags in (("plain", []), ("skip", ["--skip_bad_images"])):
        out = tmp_path / name
        out.mkdir()
        if name == "skip":
            (out / "d_dropped.txt").write_text("an earlier run's list\n")
        prepro_coco.main(prepro_coco.parse_params([
            "--coco_path", str(root), "--output_json", str(out / "d.json"),
            "--output_h5", str(out / "d.h5"), "--imsize", "8", "--workers", "1",
            "--num_val", "3", "--num_test", "3"] + flags))
        outputs[name] = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".h5"}
        with h5py.File(out / "d.h5", "r") as f:
            outputs[name]["h5"] = {k: f[k][()].tobytes() for k in f}
    assert outputs["skip"] == outputs["plain"]  # no d_dropped.txt, the stale one removed
    assert sorted(outputs["plain"]) == ["d.json", "d_test_gt.json", "d_val_gt.json", "h5"]


def test_given_splits_are_kept(shapes_dir, tmp_path, capsys):
    root, order = tiny_coco_copy(shapes_dir, tmp_path)
    given = {}
    for split in sources.SPLITS:
        for name in (root / "splits" / f"coco_{split}.txt").read_text().split():
            given[name] = "train" if split == "restval" else split
    val = [p for p in order if given[p.split("/")[-1]] == "val"]
    test = [p for p in order if given[p.split("/")[-1]] == "test"]
    break_images(root, missing=val[:1], corrupt=test[:2])
    out = tmp_path / "out"
    prepro_cli(root, out, "--splits_dir", root / "splits")
    capsys.readouterr()
    images = read_json(out / "d.json")["images"]
    assert len(images) == 27
    assert all(im["split"] == given[im["file_path"].split("/")[-1]] for im in images)
    assert sum(im["split"] == "val" for im in images) == 3
    assert sum(im["split"] == "test" for im in images) == 2
    listed = (out / "d_dropped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(val[:1] + test[:2])


def assert_one_line_error(capsys, out, *fragments):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("prepro_coco: error:")]
    assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("corrupt", [False, True], ids=["missing", "corrupt"])
def test_too_few_left_for_the_random_split_stops(shapes_dir, tmp_path, capsys, corrupt):
    root, order = tiny_coco_copy(shapes_dir, tmp_path)
    bad = sorted(order[5:7])
    break_images(root, **{"corrupt" if corrupt else "missing": bad})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        prepro_cli(root, out, "--num_val", 14, "--num_test", 14)
    assert stop.value.code == 1
    reason = "cannot identify image file" if corrupt else "file not found"
    assert_one_line_error(capsys, out, "28 of 30 images remain",
                          "too few for --num_val 14 + --num_test 14 and one train image",
                          f"2 unreadable or missing images were dropped (the first, {bad[0]}: "
                          f"{reason}")


def test_emptied_given_split_stops(shapes_dir, tmp_path, capsys):
    root, order = tiny_coco_copy(shapes_dir, tmp_path)
    val = (root / "splits" / "coco_val.txt").read_text().split()
    break_images(root, missing=[p for p in order if p.split("/")[-1] in val])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        prepro_cli(root, out, "--splits_dir", root / "splits")
    assert stop.value.code == 1
    assert_one_line_error(capsys, out, "the val split is empty: all its 4 images are gone",
                          "4 unreadable or missing images were dropped")
