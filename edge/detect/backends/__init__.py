"""How a model runs: onnxruntime sessions, host or in-graph preprocessing."""
