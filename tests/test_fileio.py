"""Every output is all or nothing: written under ``.partial``, renamed when complete."""

import json
import os

import pytest

from imcap.utils import fileio
from imcap.utils.fileio import DataError, atomic_output, link_atomically


def test_a_complete_write_replaces_the_old_file(tmp_path):
    path = str(tmp_path / "sub" / "out.txt")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("old")
    with atomic_output(path) as temporary:
        assert temporary == path + ".partial"
        with open(temporary, "w") as f:
            f.write("new")
        assert open(path).read() == "old"  # not yet in place
    assert open(path).read() == "new" and not os.path.exists(path + ".partial")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path, error):
    path = str(tmp_path / "out.txt")
    with open(path, "w") as f:
        f.write("old")
    with pytest.raises(error):
        with atomic_output(path) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise error()
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_a_resumable_output_keeps_its_partial_file(tmp_path):
    path = str(tmp_path / "cache.h5")
    with pytest.raises(RuntimeError):
        with atomic_output(path, keep_on_error=True) as temporary:
            open(temporary, "w").close()
            raise RuntimeError()
    assert os.listdir(tmp_path) == ["cache.h5.partial"]


def test_the_suffix_a_writer_needs_stays_at_the_end(tmp_path):
    assert fileio.partial_path("a/m.keras", ".keras") == "a/m.partial.keras"
    assert fileio.partial_path("a/m.weights.h5", ".weights.h5") == "a/m.partial.weights.h5"
    assert fileio.partial_path("a/m.txt", ".keras") == "a/m.txt.partial"
    assert fileio.partial_path("a/saved/") == "a/saved.partial"


def test_a_folder_output_replaces_the_old_folder_when_complete(tmp_path):
    out = str(tmp_path / "saved")
    os.makedirs(os.path.join(out, "old"))
    with atomic_output(out, directory=True) as temporary:
        os.makedirs(os.path.join(temporary, "new"))
    assert os.listdir(out) == ["new"] and not os.path.exists(out + ".partial")
    with pytest.raises(RuntimeError):
        with atomic_output(out, directory=True) as temporary:
            os.makedirs(os.path.join(temporary, "half"))
            raise RuntimeError()
    assert os.listdir(out) == ["new"] and not os.path.exists(out + ".partial")


def test_a_directory_where_a_file_belongs_is_refused_before_writing(tmp_path):
    with pytest.raises(DataError, match="is a directory, expected a file name"):
        with atomic_output(str(tmp_path)):
            pytest.fail("the block must not run")


def test_links_replace_the_target_atomically(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_text("checkpoint")
    target.write_text("older")
    link_atomically(str(source), str(target))
    assert target.read_text() == "checkpoint"
    assert os.stat(source).st_ino == os.stat(target).st_ino  # a link, not a copy
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_json_is_written_atomically_and_read_with_the_file_named(tmp_path):
    path = str(tmp_path / "x.json")
    fileio.write_json_atomic(path, {"a": [1, 2]})
    assert fileio.load_json(path) == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match=r"bad.json is malformed JSON: .*line 1"):
        fileio.load_json(str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match="not found"):
        fileio.load_json(str(tmp_path / "none.json"))
    assert json.loads(open(path).read()) == {"a": [1, 2]}


def test_too_little_space_names_the_folder_and_the_need(tmp_path):
    with pytest.raises(DataError, match=r"too little space in .*: .* MB free, the test needs"):
        fileio.check_space(str(tmp_path / "x"), 1 << 60, "the test")
