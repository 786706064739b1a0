"""Deployment artefacts: float ONNX (`onnx`), the QONNX -> hls4ml FPGA bundle (`hls`), the
bit-exact integer model of that bundle (`fixedpoint`) and latency/resource estimates
(`estimate`). Heavy dependencies (onnx, brevitas, qonnx, hls4ml) are imported inside
functions so `import lymphosort.export` stays light.
"""
