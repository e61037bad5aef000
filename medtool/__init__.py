"""medtool: a command-line toolbox for deep learning on medical images."""

__version__ = "0.1.0"
