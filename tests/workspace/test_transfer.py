"""Starting from a trained network: which file or folder, what loads, what is refused; plans carried over."""

import json
import logging

import pytest
import torch

from mambaseg.networks import create
from mambaseg.networks.pretrained import load_fitting
from mambaseg.planning.checkpoint import save_checkpoint
from mambaseg.planning.plans import PlansError, load_plans, plans_from_dict
from mambaseg.pretraining.models import build_classifier, export_encoder
from mambaseg.training.fine_tuning import is_network_checkpoint, prepare_fine_tuning
from mambaseg.workspace import plan
from mambaseg.workspace.training import pretrained_file
from tests.data.synthetic import write_nnunet_dataset


def trained(path, network, classes, **extra):
    model = create(network, 2, 1, classes, tiny=True)
    run = {"run": {"configuration": "2d", "fold": "0", "plan": {"network": network}}}
    return save_checkpoint(path, model=model, epoch=1, extra={**run, **extra}), model


def test_fitting_tensors_load_and_the_output_layers_of_other_classes_are_skipped(tmp_path, caplog):
    path, source = trained(tmp_path / "checkpoint_final.pt", "unet_resenc", 4)
    model = create("unet_resenc", 2, 1, 2, tiny=True)
    with caplog.at_level(logging.INFO, logger="mambaseg"):
        groups, hook = prepare_fine_tuning(model, {"pretrained": str(path), "freeze_encoder_epochs": 1})
    heads = sorted(key for key in model.state_dict() if key.startswith("decoder.heads."))
    total = len(model.state_dict())
    assert heads and f"{total - len(heads)} of {total} tensors loaded" in caplog.text
    assert f"{heads[0]} (shape differs: (4," in caplog.text
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key]) == (key not in heads), key
    assert groups == {} and hook is not None  # freezing keeps its meaning


def test_load_fitting_reports_missing_and_unexpected_keys():
    model = create("unet_resenc", 2, 1, 2, tiny=True)
    state = dict(model.state_dict())
    dropped = sorted(state)[0]
    del state[dropped]
    state["extra.weight"] = torch.zeros(1)
    report = load_fitting(model, state)
    assert report.missing == [dropped] and report.unexpected == ["extra.weight"] and not report.shape_differs
    assert len(report.loaded) == len(state) - 1


def test_another_family_is_refused_naming_the_file(tmp_path):
    path, _ = trained(tmp_path / "checkpoint_final.pt", "swin_umamba", 2)
    with pytest.raises(ValueError, match=rf"{path}.*swin_umamba.*no tensor that fits the encoder of this unet_resenc"):
        prepare_fine_tuning(create("unet_resenc", 2, 1, 2, tiny=True), {"pretrained": str(path)})
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="no VSS encoder to load"):  # not a checkpoint: taken as an encoder file
        prepare_fine_tuning(create("unet_resenc", 2, 1, 2, tiny=True), {"pretrained": str(bad)})


def test_encoder_files_are_told_apart_from_checkpoints_and_resuming_loads_nothing(tmp_path):
    encoder = export_encoder(build_classifier("vmunet", 3, 4, tiny=True), tmp_path / "encoder.pt", {})
    checkpoint, _ = trained(tmp_path / "checkpoint_final.pt", "vmunet", 2)
    assert not is_network_checkpoint(encoder) and is_network_checkpoint(checkpoint)
    assert not is_network_checkpoint(tmp_path / "missing.pt")
    model = create("vmunet", 2, 1, 2, tiny=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_fine_tuning(model, {"pretrained": str(checkpoint)}, load=False)
    checkpoint.unlink()  # a resumed run whose pretrained file is gone since
    prepare_fine_tuning(create("unet_resenc", 2, 1, 2, tiny=True), {"pretrained": str(checkpoint)}, load=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_folders_resolve_to_their_final_checkpoint(tmp_path, caplog):
    run = tmp_path / "runs" / "3d_fullres__unet_resenc"
    for fold in ("0", "1"):
        (run / f"fold_{fold}").mkdir(parents=True)
    (run / "fold_1" / "checkpoint_final.pt").write_bytes(b"")
    assert pretrained_file(str(run / "fold_1")) == str(run / "fold_1" / "checkpoint_final.pt")
    with caplog.at_level(logging.INFO, logger="mambaseg"):
        assert pretrained_file(str(run)) == str(run / "fold_1" / "checkpoint_final.pt")  # fold 0 is unfinished
    assert "has folds 0, 1; starting from fold 1" in caplog.text
    (run / "fold_0" / "checkpoint_final.pt").write_bytes(b"")
    assert pretrained_file(str(run)) == str(run / "fold_0" / "checkpoint_final.pt")
    assert pretrained_file(None) is None and pretrained_file(str(tmp_path / "x.pt")) == str(tmp_path / "x.pt")
    unfinished = run.parent / "2d__unet_resenc" / "fold_0"
    unfinished.mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"network.pretrained: {unfinished} has no finished fold"):
        pretrained_file(str(unfinished))
    with pytest.raises(ValueError, match=rf"network.pretrained: {tmp_path}: not a run folder"):
        pretrained_file(str(tmp_path))


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    source = write_nnunet_dataset(root / "raw" / "A", n_cases=2, shape=(6, 10, 10), spacing=(1, 1, 1), name="A")
    plan(source, root / "ws", network="unet_resenc", workers=0)
    return root


def test_plans_from_refuses_another_channel_count_or_dimensionality(planned):
    ws = planned / "ws"
    two = write_nnunet_dataset(
        planned / "raw" / "C", n_cases=2, shape=(6, 10, 10), channels={0: "T1", 1: "T2"}, name="C"
    )
    with pytest.raises(ValueError, match=r"A has 1 input channel.*C has 2"):
        plan(two, ws, plans_from="A", workers=0)
    flat = write_nnunet_dataset(planned / "raw" / "D", n_cases=2, shape=(10, 10), spacing=(1, 1), name="D")
    with pytest.raises(ValueError, match=r"A is 3-D and D is 2-D"):
        plan(flat, ws, plans_from=ws / "A" / "plans.json", workers=0)
    with pytest.raises(ValueError, match=r"plans_from Nowhere: neither a plans file nor a dataset"):
        plan(flat, ws, plans_from="Nowhere", workers=0)
    with pytest.raises(ValueError, match=r"the networks come from plans_from"):
        plan(flat, ws, network="unet_resenc", plans_from="A", workers=0)
    assert not (ws / "C" / "plans.json").exists() and not (ws / "D" / "plans.json").exists()


def test_plans_from_is_checked_on_load_and_absent_from_own_plans(planned):
    path = planned / "ws" / "A" / "plans.json"
    data = json.loads(path.read_text())
    assert "plans_from" not in data and load_plans(path).plans_from is None
    with pytest.raises(PlansError, match=r"plans_from must be null or an object of strings"):
        plans_from_dict({**data, "plans_from": {"dataset": "A"}}, "edited.json")
