"""Masks from words: CLIPSeg (``--text``, ``--example``) and SegFormer (``--classes``) propose a
first-frame label map (``first_mask.propose_first_mask``). ``transformers`` (the ``prompts``
extra) is imported only when a model is loaded (``hf_models``).
"""
