import nibabel as nib
import numpy as np

from mambaseg.data import check_dataset, load_dataset
from mambaseg_datasets.demo import LABELS, make_case, write_demo_dataset


def test_cases_are_a_function_of_the_seed_and_hold_both_structures():
    first = make_case(np.random.default_rng(5))
    again = make_case(np.random.default_rng(5))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    for seed in range(5):
        image, label = make_case(np.random.default_rng(seed))
        assert image.shape == label.shape and image.dtype == np.float32
        assert set(np.unique(label)) == set(LABELS.values())
        assert image[label == 1].mean() > image[label == 2].mean() > image[label == 0].mean()


def test_written_dataset_passes_the_check_and_is_not_rewritten(tmp_path):
    folder = write_demo_dataset(tmp_path, n_train=3, n_test=1, seed=1)
    dataset = load_dataset(folder)
    assert dataset.layout == "nnunetv2" and len(dataset.cases) == 3
    assert check_dataset(dataset, max_workers=1).ok
    assert (folder / "labelsTs" / "demo_003.nii.gz").is_file()
    header = nib.load(folder / "imagesTr" / "demo_000_0000.nii.gz").header
    assert tuple(float(z) for z in header.get_zooms()) == (1.0, 1.0, 1.5)
    mtime = (folder / "dataset.json").stat().st_mtime_ns
    write_demo_dataset(tmp_path, n_train=3, n_test=1, seed=1)
    assert (folder / "dataset.json").stat().st_mtime_ns == mtime
