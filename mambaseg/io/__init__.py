"""Reading and writing images with their geometry. This layer never imports torch."""

from mambaseg.io.dicom import DicomSeries, list_dicom_series, main_series, read_dicom_series
from mambaseg.io.errors import ChannelFilesError, ImageReadError
from mambaseg.io.files import (
    SUPPORTED_EXTENSIONS,
    image_extension,
    read_case_channels,
    read_image,
    read_image_channels,
    write_image,
)
from mambaseg.io.image import GEOMETRY_TOLERANCE, GeometryDifference, Image, geometry_differences
from mambaseg.io.nifti import nifti_affine
from mambaseg.io.sitk_formats import from_sitk, to_sitk

__all__ = [
    "GEOMETRY_TOLERANCE",
    "SUPPORTED_EXTENSIONS",
    "ChannelFilesError",
    "DicomSeries",
    "GeometryDifference",
    "Image",
    "ImageReadError",
    "from_sitk",
    "geometry_differences",
    "image_extension",
    "list_dicom_series",
    "main_series",
    "nifti_affine",
    "read_dicom_series",
    "read_case_channels",
    "read_image",
    "read_image_channels",
    "to_sitk",
    "write_image",
]
