"""Image–caption agreement with a multilingual CLIP run on ONNX Runtime: the model folder and its
runtime (`model`), the Beam stage (`stage`), the summaries of its scores for `stats.json`
(`summary`), and the export of the published weights to the folder format (`export`, needs the
`convert` extra). The filters on the scores are `filters.scores`."""
