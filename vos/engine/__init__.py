"""The tracking engine: prompt memory (``session``), the streaming per-video predictor
(``predictor``: masks on any frame, backward pass), the per-video run that every front end calls
(``video.run_video``: ``vos run``, the batch worker, the web app) and in-context segmentation of
images (``images``). Imports neither Ray nor :mod:`vos.batch`.
"""
