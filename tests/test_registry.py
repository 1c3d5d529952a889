"""The model registry's one-entry rule: what an entry says of its model is what the model does, and
every part of segtrain that needs a fact about a model gets the entry's."""

import pytest
import torch

from segtrain.config.load import resolve
from segtrain.config.recipe import DEFAULT_MODEL, FIT_KEY, THIN_MODEL
from segtrain.errors import ConfigError
from segtrain.models.registry import MODELS, build_model, names, recipe_choices
from segtrain.models.smp_models import MULTIPLE
from segtrain.models.weights import resolve as resolve_weights
from segtrain.run_folder import CHECKPOINT_NAME
from segtrain.training.resume import checkpoint_to_resume


def smallest_side(net, sides) -> int | None:
    """The smallest of `sides` whose square input `net` takes (eval mode, batch 1)."""
    for side in sides:
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, side, side))
        except RuntimeError:
            continue
        return side
    return None


@pytest.mark.parametrize("name", list(MODELS))
def test_aux_head_is_what_the_entry_says(name):
    entry = MODELS[name]
    if not entry.aux_head:
        with pytest.raises(ConfigError) as e:
            build_model(name, 2, aux_loss=True)
        assert str(e.value) == f'model {name} has no auxiliary head; set "aux_loss": false.'
    if entry.network is None:  # smp: SmpSegmentation returns "out" alone (test below)
        return
    with torch.device("meta"):  # the network's layers and the shapes they give, without the time to fill weights
        if not entry.aux_head:  # torchvision's network itself has none to give
            with pytest.raises(NotImplementedError):
                entry.network(2, True)
            return
        out = build_model(name, 2, aux_loss=True).eval()(torch.zeros(1, 3, 16, 16))
    assert out["aux"].shape == out["out"].shape == (1, 2, 16, 16)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "unet"])
def test_a_model_without_aux_head_returns_out_alone(name):
    model = build_model(name, 2, encoder=MODELS[name].encoder("mobilenet_v2")).eval()
    assert set(model(torch.zeros(1, 3, 8, 8))) == {"out"}


@pytest.mark.parametrize("name", ["pan", "unet"])
def test_an_smp_entry_s_min_side_is_the_smallest_input_its_network_takes(name):
    entry = MODELS[name]
    model = build_model(name, 2, encoder="mobilenet_v2").eval()
    # smp's networks take multiples of MULTIPLE; the entry's min_side raises the least of them (PAN: 128)
    assert smallest_side(model.net, range(MULTIPLE, 5 * MULTIPLE, MULTIPLE)) == max(entry.min_side, MULTIPLE)
    assert model.min_size == entry.min_side  # and the model pads smaller inputs up to it
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 5, 9))["out"].shape == (1, 2, 5, 9)


def test_a_torchvision_entry_without_min_side_takes_one_pixel():
    assert MODELS["lraspp_mobilenet_v3_large"].min_side == 0
    assert smallest_side(build_model("lraspp_mobilenet_v3_large", 2).eval(), (1, 2)) == 1


def test_the_default_encoder_comes_from_the_entry_in_config_build_and_weights(tmp_path):
    for name in names():
        assert resolve({"model": name})["encoder"] == MODELS[name].default_encoder
    entry = MODELS["segformer"]  # the one whose default is not smp's resnet34
    assert entry.encoder() == "mit_b0" and entry.encoder("resnet18") == "resnet18"
    assert type(build_model("segformer", 2).net.encoder).__name__ == "MixVisionTransformerEncoder"
    lines = []
    assert resolve_weights("segformer", None, None, tmp_path, lines.append).file is None
    assert len(lines) == 1 and f"has no ImageNet weights for encoder {entry.default_encoder} " in lines[0]
    assert MODELS["fcn_resnet18"].encoder("resnet34") is None  # its backbone is in its name


def test_smp_entries_take_an_encoder_and_torchvision_entries_an_imagenet_file():
    for entry in MODELS.values():
        assert (entry.default_encoder is not None) == entry.takes_encoder
        assert (entry.imagenet_url is None) == entry.takes_encoder
        assert (entry.network is None) == entry.takes_encoder


def test_the_recipe_chooses_only_entries_marked_as_its_choice():
    assert set(recipe_choices()) == {DEFAULT_MODEL, THIN_MODEL[0]}


@pytest.mark.parametrize("name", recipe_choices())
def test_resume_finds_a_run_of_each_model_the_recipe_may_choose(name, tmp_path):
    checkpoint = tmp_path / f"MODEL-{name}" / CHECKPOINT_NAME
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    # the config as resolved before the recipe is fitted: the output folder is left to the recipe
    cfg = {"output_dir": DEFAULT_MODEL, FIT_KEY: ["model", "output_dir"]}
    assert checkpoint_to_resume(tmp_path, cfg, "") == checkpoint
