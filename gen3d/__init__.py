"""Gen3D serving: SAM 3 and SAM 3D Objects behind TorchServe, locally and on SageMaker.

Layers, imports flowing downward only (tests/unit/test_layout.py checks it):
``cli`` -> ``sam3`` | ``sam3d`` | ``sagemaker`` -> ``torchserve`` -> ``serving`` -> ``errors``, ``models``, ``files``,
``checks``; ``sam3`` and ``sam3d`` never import each other.
"""
