"""lymphosort: label-free lymphocyte classification from bright-field images.

Data flows through the subpackages in order:
data -> models -> train/distill/transfer -> evaluate -> export -> realtime -> report.
Importing the package touches neither the network nor any heavy optional dependency.
"""

from lymphosort.errors import LymphosortError

__version__ = "0.1.0"
__all__ = ["LymphosortError", "__version__"]
