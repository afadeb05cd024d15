"""Built-in dataset layouts: synthetic phantoms, folder per class, CSV manifest, MedMNIST npz."""

from medcls.plugins.hookspecs import hookimpl
from medcls.data import arrays, layouts, synthetic


@hookimpl
def medcls_register_datasets(register):
    register("synthetic", synthetic.load_synthetic, detect=synthetic.is_synthetic,
             description="Built-in MR-like brain phantoms with and without a tumour (offline demo)")
    register("synthetic-multilabel", synthetic.load_synthetic_multilabel, detect=synthetic.is_synthetic_multilabel,
             description="Built-in brain phantoms with three independent findings: lesion, calcification, "
                         "midline shift (multi-label demo)")
    register("synthetic3d", synthetic.load_synthetic_volumes, detect=synthetic.is_synthetic_volumes,
             description="Built-in 3D head volumes with and without a lesion (for 3D backbones)")
    register("arrays", arrays.load_memory, detect=arrays.is_memory,
             description="Images in memory (numpy/torch), from the Python API's images= and labels=")
    register("csv", layouts.load_csv, detect=layouts.is_csv,
             description="CSV manifest: path,label[,patient_id][,split]; columns mappable")
    register("npz", layouts.load_npz, detect=layouts.is_npz,
             description="MedMNIST-style .npz with {train,val,test}_images and _labels")
    register("folder", layouts.load_folder, detect=layouts.is_folder,
             description="A folder per class, optionally under train/ val/ test/ (Keras style)")
