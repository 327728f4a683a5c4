"""``vos app``: a web page (Gradio, the ``app`` extra) to annotate, propagate, correct and export a
video on the engine of ``vos run``.

:mod:`vos.app.state` holds the per-session state and the shared model (no Gradio);
:mod:`vos.app.server` the page and its named API endpoints (imports Gradio).
"""
