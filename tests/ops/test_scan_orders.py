import pytest
import torch

from mambaseg.ops.scan_orders import SCAN_ORDER_NAMES, ScanOrder, flatten_orders, merge_orders, scan_orders

SHAPES = {1: (7,), 2: (3, 5), 3: (2, 3, 4)}


@pytest.mark.parametrize("name", SCAN_ORDER_NAMES)
@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_every_order_is_a_permutation_and_inverts(name, spatial_dims):
    shape = SHAPES[spatial_dims]
    index = torch.arange(torch.tensor(shape).prod().item()).reshape(1, 1, *shape).float()
    for order in scan_orders(name, spatial_dims):
        seq = order.flatten(index)
        assert seq.shape == (1, 1, index.numel())
        assert torch.equal(seq.sort(dim=-1).values.flatten(), index.flatten())
        assert torch.equal(order.unflatten(seq, shape), index)


def test_cross_2d_is_vmamba_four_way_scan():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)  # rows [0 1 2], [3 4 5]
    seqs = [o.flatten(x).flatten().tolist() for o in scan_orders("cross", 2)]
    assert seqs == [
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],  # row-major reversed
        [5, 2, 4, 1, 3, 0],  # column-major reversed
    ]


def test_tri_slice_interleaved_matches_segmamba_chunk_and_stack():
    x = torch.arange(24.0).reshape(1, 1, 4, 3, 2)
    flat = x.reshape(1, 1, -1)
    nslices = x.shape[2]
    chunked = torch.stack(flat.chunk(nslices, dim=-1), dim=-1).flatten(-2)
    assert torch.equal(scan_orders("tri", 3)[2].flatten(x), chunked)


def test_merge_orders_sums_back_in_place():
    x = torch.randn(2, 3, 4, 5)
    orders = scan_orders("cross", 2)
    merged = merge_orders(flatten_orders(x, orders), orders, x.shape[2:])
    torch.testing.assert_close(merged, 4 * x)


def test_bad_orders_are_rejected():
    with pytest.raises(ValueError, match="not a permutation"):
        ScanOrder((0, 0))
    with pytest.raises(ValueError, match="unknown scan order"):
        scan_orders("zigzag", 2)
    with pytest.raises(ValueError, match="spatial axes"):
        scan_orders("raster", 2)[0].flatten(torch.zeros(1, 1, 4))
