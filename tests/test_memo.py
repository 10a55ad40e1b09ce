"""memo.Reuse: an output is kept only when its key and its files are the ones recorded."""
import json

from noisylabels import memo


def _write_old(old, key="k1"):
    """An old output folder with one output `a` (two files) made from `key`."""
    new = old.parent / "first"
    new.mkdir()
    (new / "fig").mkdir()
    (new / "fig/a.png").write_bytes(b"png bytes")
    (new / "fig/a.csv").write_text("x,y\n1,2\n")
    reuse = memo.Reuse(old, new)  # no old folder yet: nothing to keep
    assert not reuse.keep("a", key)
    reuse.made("a", key, ["fig/a.png", "fig/a.csv"])
    reuse.write()
    new.rename(old)


def test_an_output_with_the_same_key_is_copied_and_recorded_again(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _write_old(old)
    new.mkdir()
    reuse = memo.Reuse(old, new)
    assert reuse.keep("a", "k1")
    reuse.write()
    assert (new / "fig/a.png").read_bytes() == b"png bytes" and (new / "fig/a.csv").read_text() == "x,y\n1,2\n"
    assert (new / memo.MANIFEST).read_bytes() == (old / memo.MANIFEST).read_bytes()


def test_another_key_a_changed_file_or_a_damaged_manifest_keeps_nothing(tmp_path):
    old = tmp_path / "old"
    _write_old(old)
    new = tmp_path / "new"
    new.mkdir()
    assert not memo.Reuse(old, new).keep("a", "k2")  # made from something else
    assert not memo.Reuse(old, new).keep("b", "k1")  # never made
    (old / "fig/a.csv").write_text("x,y\n1,3\n")  # edited by hand since
    assert not memo.Reuse(old, new).keep("a", "k1")
    (old / memo.MANIFEST).write_text("{not json")
    assert not memo.Reuse(old, new).keep("a", "k1")
    assert not list(new.iterdir())  # nothing was copied


def test_a_key_covers_its_parts_and_the_code():
    assert memo.key("a", [1, 2]) == memo.key("a", [1, 2])
    assert memo.key("a", [1, 2]) != memo.key("a", [2, 1])
    made_by = json.dumps(memo._made_by(), sort_keys=True)
    assert len(memo._made_by()[0]) == 64 and "matplotlib" in made_by  # the package's source digest, versions
