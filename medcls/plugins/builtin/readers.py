"""Built-in readers: Pillow images, DICOM (pydicom + pylibjpeg decoders) and NIfTI (nibabel)."""

from medcls.plugins.hookspecs import hookimpl
from medcls.data import readers as r
from medcls.data import volumes as v


@hookimpl
def medcls_register_readers(register):
    register("image", r.read_pil, description="PNG/JPEG/TIFF/BMP of any mode via Pillow",
             extensions=r.PIL_EXTENSIONS, settings=("size",), greyscale=r.pil_greyscale)
    register("dicom", r.read_dicom,
             description="DICOM: rescale to HU, header window or VOI LUT, MONOCHROME1 inverted",
             extensions=r.DICOM_EXTENSIONS, sniff=r.is_dicom, patient_id=r.dicom_patient_id,
             settings=("window",), greyscale=r.dicom_greyscale)
    register("nifti", r.read_nifti, description="Single-slice NIfTI via nibabel",
             extensions=r.NIFTI_EXTENSIONS, greyscale=lambda path: True)
    register("nifti_volume", v.read_nifti_volume, dims=3, extensions=r.NIFTI_EXTENSIONS,
             description="3D NIfTI volume via nibabel, reoriented to RAS, with voxel spacing")
    register("dicom_series", v.read_dicom_series, dims=3, folders=v.is_series_folder, settings=("series_uid",),
             description="DICOM series folder: slices sorted along the normal, rescaled, spacing derived")
