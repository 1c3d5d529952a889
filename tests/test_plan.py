"""The run's plan (config/plan.py) is resolved once and then only read: no item assignment, no
shared lists, fitting makes a new plan; a run stores its fitted plan as the checkpoint's config,
each fact once, and its schedule (training/schedule.py) beside it."""

import pytest
import torch

from segtrain.config.load import resolve
from segtrain.data.synthetic import write_sky_folder
from segtrain.training.loop import train
from segtrain.training.schedule import Schedule


def test_a_plan_cannot_be_written_and_hands_out_copies():
    plan = resolve({"image_size": [48, 64], "class_weights": [1, 2]})
    with pytest.raises(TypeError):
        plan["lr"] = 0.1
    with pytest.raises(AttributeError):
        plan.budget_seconds = 5
    size = plan["image_size"]
    size.append(99)
    plan["class_weights"][0] = 7
    assert plan["image_size"] == [48, 64] and plan["class_weights"] == [1, 2] and plan.input_size == (48, 64)
    changed = plan.with_changes(lr=0.5)
    assert changed["lr"] == 0.5 and plan["lr"] != 0.5  # a new plan; this one is unchanged


def test_the_plan_holds_its_facts_parsed_once():
    assert resolve({"time_budget": "1h30m"}).budget_seconds == 5400
    assert resolve({}).budget_seconds is None
    unet = resolve({"model": "unet"})
    assert unet.model_entry.name == "unet" and unet["encoder"] == unet.model_entry.encoder()


def test_training_reads_the_plan_and_stores_the_fitted_one_once(tmp_path):
    root = write_sky_folder(tmp_path / "d", n_train=4, n_valid=2, size=32)
    plan = resolve({"max_iteration": 2, "interval_validate": 1, "n_workers": 0, "pretrained_backbone": False,
                    "class_weights": "auto", "log_interval": 100})
    given = plan.as_dict()
    folder = train(root, plan, log=lambda *args: None)
    assert plan.as_dict() == given  # the run fitted its own plan; the one it was given is unchanged
    ckpt = torch.load(folder / "checkpoint.pth.tar", weights_only=True)
    saved = ckpt["config"]
    # Fitted to the folder: the open keys got values, class_weights "auto" its numbers.
    assert saved["image_size"] == [32, 32] and saved["batch_size"] == 4 and len(saved["auto_class_weights"]) == 2
    assert "image_size" not in ckpt  # once, in the config
    fitted = set(given["fitted_to_data"]) | {"auto_class_weights", "unlabeled_threshold"}
    assert {key: value for key, value in saved.items() if key not in fitted} == \
        {key: value for key, value in given.items() if key not in fitted}
    assert Schedule.saved(ckpt) == Schedule("poly", 2, 1)


def test_a_checkpoint_from_before_the_schedule_had_its_own_entry_still_resumes_its_schedule():
    old = {"config": {"lr_schedule": "poly", "max_iteration": 41, "interval_validate": 21,
                      "time_plan": {"planned_at": 10, "interval_given": False}, "poly_decay_from": [10, 0.9]}}
    schedule = Schedule.saved(old)
    assert (schedule.max_iteration, schedule.interval_validate, schedule.decay_from) == (41, 21, (10, 0.9))
    assert schedule.planned and schedule.factor(10) == pytest.approx(0.9)
