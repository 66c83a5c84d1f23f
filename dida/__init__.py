"""DIDA Studio engine: datasets, model, adaptation methods, training, evaluation and analysis.

Never imports the UI (`app/`) or gradio; `tests/test_layering.py` enforces it.
"""

__version__ = "0.1.0"
