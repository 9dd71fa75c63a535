#!/usr/bin/env python3
"""Write the synthetic tracking clips (real wider_dev faces moved over the real videos) with ground truth.

    .venv/bin/python scripts/make_clips.py --out /tmp/clips
"""
import sys

from edge.eval.clips import main_make

if __name__ == "__main__":
    sys.exit(main_make())
