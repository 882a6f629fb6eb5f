"""pytest: leave out the doctests of modules whose optional dependencies are not installed."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("distributed") else ["hmi_fast/distributed.py"]
