"""The model registry: architecture name -> network, and backbone weights."""
