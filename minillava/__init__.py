"""minillava: visual instruction tuning (LLaVA), rebuilt to be read.

The package is organised one concept per module, in the order the course teaches them:
``projector`` -> ``splicing`` -> ``loss`` -> ``vision`` -> ``model`` -> ``interop``.
"""

from minillava.device import pick_device
from minillava.model import MiniLlava, MiniLlavaConfig, MiniLlavaOutput

__all__ = ["MiniLlava", "MiniLlavaConfig", "MiniLlavaOutput", "pick_device"]
__version__ = "0.1.0"
