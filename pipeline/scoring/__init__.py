"""Image–caption agreement with a multilingual CLIP run on ONNX Runtime: the model folder and its
runtime (`model`), the Beam stage (`stage`), and the export of the published weights to the
folder format (`export`, needs the `convert` extra)."""
