"""plugin: a trained model as a complete Waggle/Sage edge app folder (`segtrain plugin`).

app/ is the code that runs on the node, written into the plugin folder as it is; build.py writes
the folder around it (the raw-input export, its metadata, Dockerfile, sage.yaml, ecr-meta/, README).
"""
