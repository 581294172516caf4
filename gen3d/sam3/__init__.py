"""Model ``sam3`` (SAM 3 from PyPI ``sam3``): tasks ``get_embedding`` and ``segment``."""
