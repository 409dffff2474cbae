"""Shared by the foundation tests: makes tests/dmsupport.py (test devices, helpers) importable."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
