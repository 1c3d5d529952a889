"""A trained model, rebuilt from its checkpoint alone: evaluate, predict, export, mode test."""
