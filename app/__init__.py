"""DIDA Studio's Gradio app: ``build_app(studio)`` lays out the tabs, ``launch_app`` serves them.

The app only places what the engine computes (``dida.studio``, ``dida.visualize``, ``dida.explain``,
``dida.analysis``); start it with ``python launch.py``.
"""

from app.main import CSS, THEME, build_app, launch_app

__all__ = ["CSS", "THEME", "build_app", "launch_app"]
