"""``expert-router profile-gpu``: measure the user's own GPU the way ../shared/data/gpu was
measured, and write a measurement file that ``fit-gpu`` turns into a GPU spec.

``plan`` chooses the points (pure Python, tested everywhere); ``forward`` builds and times
the forward passes (PyTorch with CUDA, imported only when a profile runs: extra ``[gpu]``);
``run`` writes the file within a time budget.
"""
