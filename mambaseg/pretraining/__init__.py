"""Image-folder classification pretraining of VSS encoders, and the ``encoder.pt`` they export."""

from mambaseg.pretraining.models import build_classifier, encoder_settings, list_pretrain_models
from mambaseg.pretraining.run import pretrain

__all__ = ["build_classifier", "encoder_settings", "list_pretrain_models", "pretrain"]
