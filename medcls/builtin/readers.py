"""Built-in readers: Pillow images, DICOM (pydicom + pylibjpeg decoders) and NIfTI (nibabel)."""

from medcls import hookimpl
from medcls.data import readers as r


@hookimpl
def medcls_register_readers(register):
    register("image", r.read_pil, description="PNG/JPEG/TIFF/BMP of any mode via Pillow",
             extensions=r.PIL_EXTENSIONS, settings=("size",))
    register("dicom", r.read_dicom,
             description="DICOM: rescale to HU, header window or VOI LUT, MONOCHROME1 inverted",
             extensions=r.DICOM_EXTENSIONS, sniff=r.is_dicom, patient_id=r.dicom_patient_id,
             settings=("window",))
    register("nifti", r.read_nifti, description="Single-slice NIfTI via nibabel",
             extensions=r.NIFTI_EXTENSIONS)
