"""One rank's training: the loop (epochs, evaluation, divergence), the checkpoint, the
logger (metrics, TensorBoard) and the counted collectives. Optimizer-agnostic."""
