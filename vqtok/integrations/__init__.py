"""Optional engines behind extras (onnx: ONNX export and a torch-free onnxruntime runner; ray). Importing this
package imports nothing heavy: ort_runner.py runs without torch."""
