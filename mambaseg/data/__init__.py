"""Dataset layouts (nnU-Net v2, Decathlon), their validation, conversion and cross-validation splits."""

from mambaseg.data.check import CheckReport, Problem, check_dataset
from mambaseg.data.convert import convert_to_nnunetv2, nnunet_folder_name
from mambaseg.data.dataset import Case, Dataset, DatasetError, load_dataset
from mambaseg.data.splits import SplitsError, load_or_create_splits, make_splits

__all__ = [
    "Case",
    "CheckReport",
    "Dataset",
    "DatasetError",
    "Problem",
    "SplitsError",
    "check_dataset",
    "convert_to_nnunetv2",
    "load_dataset",
    "load_or_create_splits",
    "make_splits",
    "nnunet_folder_name",
]
