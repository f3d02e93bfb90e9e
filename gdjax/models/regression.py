"""(being written)"""

MODELS = ()
