"""The edge app that `segtrain plugin` copies, file for file, into a plugin folder's app/.

It runs on a Waggle node with pywaggle, ONNX Runtime (or torch, for a TorchScript model), NumPy
and Pillow, never with segtrain: every module here imports only those and its siblings. segtrain
itself imports measure.py and pictures.py, so `segtrain predict` and the app compute class
fractions and draw masks with the same lines.
"""
