"""The hydra config groups, installed as the package ``mambaseg.configs`` (see ``configs/README.md``)."""
