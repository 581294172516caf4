"""Model ``sam3d`` (SAM 3D Objects, ``sam3d_objects``): task ``generate_3d``. Imports nothing of ``gen3d.sam3``:
the sam3d image lacks sam3's packages."""
