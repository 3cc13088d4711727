"""A trained model outside Python's training code: TorchScript and ONNX files checked against PyTorch
(``python -m recursivedet.deploy``)."""
