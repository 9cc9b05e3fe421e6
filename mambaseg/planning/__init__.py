"""Dataset fingerprint (``fingerprint``), experiment planner (``planner``: spacing, configurations, topology,
patch and batch within a memory budget), its memory model (``memory``) and the plans schema (``plans``).

The submodules are imported by name, so reading plans or fingerprints does not import torch.
"""
