"""`lorarun caption DATASET --provider local`: the whole pipeline on this machine (validate, estimate, the local
"instance", the engine's captioning with a tiny BLIP of the real class, pull, verify, teardown), captions beside the
images, the existing ones kept; bad input is one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorarun.runner.cli.app import main
from lorarun.runner.state import JobStore

pytest.importorskip("transformers")


def _twenty(root):
    from helpers_dataset import make_image

    for i in range(20):
        image = make_image(root / "4_zzchar" / f"img_{i:02d}.png", size=(40 + 4 * (i % 4), 48), colour=(11 * i, 50, 90))
        if i in (3, 9, 17):
            image.with_suffix(".txt").write_text(f"hand written {i}\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_caption_locally_end_to_end(tmp_path, capsys):
    data = _twenty(tmp_path / "data")
    code = main(["caption", str(data), "--provider", "local", "--model", "builtin:tiny-blip", "--yes"])
    err = capsys.readouterr().err
    assert code == 0, err
    captions = sorted((data / "4_zzchar").glob("*.txt"))
    assert len(captions) == 20
    for i in (3, 9, 17):
        assert (data / "4_zzchar" / f"img_{i:02d}.txt").read_text(encoding="utf-8") == f"hand written {i}\n"
    new = [p for p in captions if not p.read_text(encoding="utf-8").startswith("hand written")]
    assert len(new) == 17 and all(p.read_text(encoding="utf-8").startswith("zzchar, ") for p in new)
    assert "captions: 17 written beside the images in" in err
    (state,) = JobStore().all()
    assert state.phase == "done" and state.instance_destroyed
    out = Path(state.output_dir)
    record = json.loads((out / "captions" / "captions.json").read_text())
    assert record["model"] == "builtin:tiny-blip" and len(record["captions"]) == 17
    # The job's manifest listed every caption and the record of which model wrote them; all came home verified.
    report = json.loads((out / "report.json").read_text())
    kinds = [f["kind"] for f in report["files"]]
    assert kinds.count("caption") == 17 and kinds.count("captions_record") == 1 and report["verified"] is True


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--model", "clip"], "error: --model: unknown model 'clip'; use one of florence2, florence2-base, blip, wd14"),
        (["--trigger", "two\nlines"], "error: --trigger: one short line of words"),
    ],
)
def test_bad_model_is_one_line(tmp_path, capsys, args, line):
    data = _twenty(tmp_path / "data")
    assert main(["caption", str(data), "--provider", "local", "--yes", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1, err


def test_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["caption", str(tmp_path / "nope"), "--provider", "local", "--yes"]) == 2
    assert "not a folder" in capsys.readouterr().err
