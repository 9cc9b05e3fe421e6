import torch
import torch.nn.functional as F

from mambaseg.ops import selective_scan_reference
from tests.ops.scan_cases import ScanCase, hand_computed_scan, leaf_copies, make_inputs


def test_reference_matches_a_scan_worked_out_by_hand():
    inputs, y0, y1 = hand_computed_scan()
    y = selective_scan_reference(**inputs)
    torch.testing.assert_close(y, torch.tensor([[[y0, y1]]]))


def test_reference_runs_in_float64_for_float64_inputs():
    inputs = leaf_copies(make_inputs(ScanCase(length=5)), torch.float64)
    y, last = selective_scan_reference(**inputs, delta_softplus=True, return_last_state=True)
    assert y.dtype == torch.float64 and last.dtype == torch.float64


def test_reference_gradcheck_in_float64():
    for bc_mode in ("constant", "step", "group2"):
        case = ScanCase(batch=1, dim=4, length=6, dstate=3, bc_mode=bc_mode)
        inputs = leaf_copies(make_inputs(case), torch.float64)
        names = list(inputs)

        def scan(*tensors, names=names):
            return selective_scan_reference(**dict(zip(names, tensors, strict=True)), delta_softplus=True)

        assert torch.autograd.gradcheck(scan, tuple(inputs.values()), eps=1e-6, atol=1e-5)


def test_grouped_b_with_one_group_equals_per_step_b():
    case = ScanCase(bc_mode="step", length=9)
    inputs = make_inputs(case)
    grouped = {**inputs, "B": inputs["B"].unsqueeze(1), "C": inputs["C"].unsqueeze(1)}
    torch.testing.assert_close(selective_scan_reference(**grouped), selective_scan_reference(**inputs))


def test_softplus_and_bias_are_applied_to_delta_before_the_scan():
    inputs = make_inputs(ScanCase(length=7))
    shifted = {**inputs, "delta": F.softplus(inputs["delta"] + inputs["delta_bias"][:, None]), "delta_bias": None}
    torch.testing.assert_close(
        selective_scan_reference(**inputs, delta_softplus=True), selective_scan_reference(**shifted)
    )
