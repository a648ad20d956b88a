"""statecli: inspect and fix PyTorch checkpoints from the shell, without executing them."""

__version__ = "0.1.0"
