"""The LoRA's ModelSpec keys, ss_tag_frequency and ss_dataset_dirs against sd-scripts' own writers
(sai_model_spec_reference.py, transcribed from kohya-ss/sd-scripts): the keys Civitai, A1111 and the Hub read."""

from __future__ import annotations

import json
import time

import pytest
from helpers_dataset import make_image

from lorarun.image.engine import checks
from lorarun.image.engine.data import describe
from lorarun.image.engine.save import RunFacts, build_metadata
from lorarun.image.engine_config import EngineConfig

from . import sai_model_spec_reference as ref
from .engine_helpers import engine_config

pytest.importorskip("torch")


def _dataset(root):
    for i in range(3):
        image = make_image(root / "4_Mychar" / f"a{i}.png")
        if i:
            image.with_suffix(".txt").write_text(f"Mychar, Red Hat, smiling{', SMILING' * (i - 1)}\n")
    make_image(root / "2_other thing" / "b.png")
    return root


def _cfg(tmp_path, family="sd15", model=None, dataset=None, training=None):
    return EngineConfig.from_dict(
        engine_config(tmp_path, _dataset(tmp_path / "data"), family, model=model, dataset=dataset, training=training)
    )


def _facts(cfg, family, v_param=False):
    scan = checks.scan(cfg)
    return scan, RunFacts(
        session_id="s",
        started_at=time.time(),
        family=family,
        v2=cfg.model.v2,
        v_parameterization=v_param,
        base_model=cfg.model.base,
        resolution=tuple(cfg.dataset.resolution),
        num_train_images=scan.num_train_images,
        num_reg_images=0,
        num_batches_per_epoch=1,
        num_epochs=1,
        max_train_steps=1,
        warmup_steps=0,
        optimizer="AdamW",
        mixed_precision="no",
        **describe(scan),
    )


CASES = {
    "sd15": dict(family="sd15"),
    "sd2-v, timesteps, clip skip": dict(
        family="sd15",
        model={"v2": True, "v_parameterization": True, "clip_skip": 2},
        training={"min_timestep": 100, "max_timestep": 900},
        v_param=True,
    ),
    "sdxl, min timestep only": dict(family="sdxl", training={"min_timestep": 50}),
    "caption trigger": dict(
        family="sd15", dataset={"captions": "auto", "caption_model": "builtin:tiny-blip", "caption_trigger": "ohwx"}
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_modelspec_matches_sd_scripts(tmp_path, case):
    c = dict(CASES[case])
    v_param = c.pop("v_param", False)
    cfg = _cfg(tmp_path, c["family"], c.get("model"), c.get("dataset"), c.get("training"))
    _, facts = _facts(cfg, c["family"], v_param)
    ours = build_metadata(cfg, facts, steps=1, epoch=1, finished_at=time.time())
    trigger = "ohwx" if cfg.dataset.caption_trigger else "other thing, Mychar"  # each folder's tokens, in scan order
    expected = ref.build_metadata(
        v2=cfg.model.v2,
        v_parameterization=v_param,
        sdxl=c["family"] == "sdxl",
        timestamp=facts.started_at,
        title=cfg.output_name,
        reso=tuple(cfg.dataset.resolution),
        timesteps=ref.timesteps_from_args(cfg.training.min_timestep, cfg.training.max_timestep),
        clip_skip=cfg.model.clip_skip,  # lorarun always has one (default 1); kohya writes it when given
        optional_metadata={"trigger_phrase": trigger},
        implementation_version=ours["modelspec.implementation_version"],
    )
    assert {k: v for k, v in ours.items() if k.startswith("modelspec.")} == expected
    assert ours["modelspec.implementation_version"].startswith("lorarun/")


def test_tag_frequency_and_dataset_dirs_match_sd_scripts(tmp_path):
    cfg = _cfg(tmp_path)
    scan, facts = _facts(cfg, "sd15")
    captions = {s.folder: [i.caption for i in s.images] for s in scan.subsets}
    assert facts.tag_frequency == ref.tag_frequency(captions)
    assert facts.tag_frequency["4_Mychar"] == {"mychar": 3, "red hat": 2, "smiling": 3}  # lower-cased, as kohya
    # train_network.py: ss_dataset_dirs[basename(image_dir)] = {"n_repeats", "img_count"}
    assert facts.dataset_dirs == {
        "4_Mychar": {"n_repeats": 4, "img_count": 3},
        "2_other thing": {"n_repeats": 2, "img_count": 1},
    }
    md = build_metadata(cfg, facts, steps=1, epoch=1, finished_at=time.time())
    assert json.loads(md["ss_tag_frequency"]) == facts.tag_frequency
    assert json.loads(md["ss_dataset_dirs"]) == facts.dataset_dirs
