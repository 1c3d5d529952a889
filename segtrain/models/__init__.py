"""The model registry (one entry per model), the networks it builds, backbone weights and losses."""
