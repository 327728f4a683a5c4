"""Dataset layouts: readers that turn a dataset root or a manifest into jobs (``job.Job``: one
video, its prompt masks and its output name), reading folder listings and small text files only.
"""
