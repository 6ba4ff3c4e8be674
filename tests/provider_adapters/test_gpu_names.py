"""The one GPU-name table: names users write → each provider's exact names (provider_adapters/gpu_names.py)."""

from __future__ import annotations

import pytest

from lorarun.provider_adapters import gpu_names
from lorarun.provider_adapters.gpu_names import RUNPOD, VAST, match, normalise, provider_names


@pytest.mark.parametrize("written", ["RTX 4090", "rtx4090", "RTX_4090", "4090", "NVIDIA GeForce RTX 4090", "rtx-4090"])
def test_spellings_of_one_card_meet(written):
    assert provider_names([written], VAST) == ("RTX 4090",)
    assert provider_names([written], RUNPOD) == ("NVIDIA GeForce RTX 4090",)


@pytest.mark.parametrize(
    "written, vast, runpod",
    [
        # The cases: Vast has no bare "A100"/"H100" (gpuhunt DIRECT_MAPPING); RunPod ids from SKY GPU_NAME_MAP.
        ("A100", ("A100 PCIE", "A100 SXM4"), ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")),
        ("H100", ("H100 PCIE", "H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3")),
        ("H100 SXM", ("H100 SXM",), ("NVIDIA H100 80GB HBM3",)),
        ("h100_pcie", ("H100 PCIE",), ("NVIDIA H100 PCIe",)),
        ("H100 NVL", ("H100 NVL",), ("NVIDIA H100 NVL",)),
        ("A100 SXM", ("A100 SXM4",), ("NVIDIA A100-SXM4-80GB",)),
        ("A6000", ("RTX A6000",), ("NVIDIA RTX A6000",)),
        ("RTX 6000 Ada", ("RTX 6000Ada",), ("NVIDIA RTX 6000 Ada Generation",)),
        ("V100", ("Tesla V100",), ()),
        ("L40S", ("L40S",), ("NVIDIA L40S",)),
    ],
)
def test_table_rows(written, vast, runpod):
    assert match(written, VAST).names == vast and match(written, VAST).known
    assert match(written, RUNPOD).names == runpod


def test_ada_and_ampere_6000_are_different_cards():
    assert normalise("RTX 6000 Ada") != normalise("RTX A6000")
    assert match("RTX 6000 Ada", VAST).names != match("A6000", VAST).names


def test_unknown_name_is_passed_on_as_written_and_said():
    m = match("Radeon_VII", VAST)
    assert not m.known and m.names == ("Radeon VII",)
    assert "not in lorarun's table" in gpu_names.describe(["Radeon_VII"], VAST)


def test_several_names_keep_order_without_repeats():
    assert provider_names(["4090", "RTX 4090", "A100 PCIE", "A100"], VAST) == ("RTX 4090", "A100 PCIE", "A100 SXM4")


def test_describe_says_what_each_name_became():
    line = gpu_names.describe(["A100", "RTX 3060"], RUNPOD)
    assert "A100 → NVIDIA A100 80GB PCIe, NVIDIA A100-SXM4-80GB" in line
    assert "RTX 3060 → none (not rented on runpod)" in line


def test_no_spelling_names_two_cards():
    seen = {}
    for model in gpu_names.TABLE:
        for spelling in (model.name, *model.aliases):
            assert seen.setdefault(normalise(spelling), model.name) == model.name, spelling
