"""Shared code of the Gen3D TorchServe handlers: request schema, storage, model building, output encoding."""
