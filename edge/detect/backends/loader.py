"""The backend a runtime section asks for: host preprocessing, graph preprocessing, or the graph filter too."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from edge.detect.backends.frames import GPU_PROVIDERS, FilterBackend, GraphBackend, is_qdq
from edge.detect.backends.host import HostBackend
from edge.detect.backends.options import SessionOptions
from edge.detect.backends.session import OnnxModel
from edge.detect.families import family_module

log = logging.getLogger(__name__)


def load_backend(path: str | Path, *, name: str, sha256: str, family: str, options: SessionOptions,
                 graph_preprocess: bool, fp16: bool, scales: tuple[float, ...], cache_dir: str | Path,
                 rewrite: Callable[[bytes], bytes] | None = None, graph_filter: bool = False
                 ) -> HostBackend | GraphBackend:
    """GraphBackend (graph preprocessing; FilterBackend with the in-graph threshold), else HostBackend.

    fp16 without graph preprocessing converts the model only (float32 blob in, float32 out); the
    converted copy is kept under `cache_dir`. `graph_filter` (with graph preprocessing, for families
    that have FILTER_GROUPS) also moves the score threshold into the graph.
    """
    fam = family_module(family)
    if graph_preprocess:
        kind = GraphBackend
        if graph_filter and fam.FILTER_GROUPS:
            kind = FilterBackend
        elif graph_filter:
            log.info("model %s: family %s has no in-graph score filter; its outputs are decoded on the host",
                     name, family)
        return kind(path, name=name, sha256=sha256, family=fam, scales=scales, options=options, fp16=fp16,
                    cache_dir=cache_dir, rewrite=rewrite)
    if fp16 and options.provider != "cpu":
        def to_half(data: bytes) -> bytes:
            from edge.detect.graph import fp16_cached  # onnx only when a model is converted

            data = rewrite(data) if rewrite else data
            return data if is_qdq(data) else fp16_cached(data, sha256, cache_dir)

        model = OnnxModel(path, name=name, sha256=sha256, options=options, rewrite=to_half)
        if model.provider in GPU_PROVIDERS:
            return HostBackend(model, fam)
        log.warning("model %s: no GPU provider in the end; dropping fp16", name)
    return HostBackend(OnnxModel(path, name=name, sha256=sha256, options=options, rewrite=rewrite), fam)
