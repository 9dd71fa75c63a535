#!/usr/bin/env python3
"""Write the synthetic tracking clips (real wider_dev faces moved over the real videos) with ground truth.

    .venv/bin/python scripts/make_clips.py --out /tmp/clips
"""
import sys

from edge.runtime.hardening import harden_tool

if __name__ == "__main__":
    harden_tool()  # before edge.eval.clips imports onnxruntime and decodes the first frame
    from edge.eval.clips import main_make

    sys.exit(main_make())
