"""The demo page's server (static files, the ONNX decoder) for `make serve`."""
