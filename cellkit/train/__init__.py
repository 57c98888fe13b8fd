"""Training entry points: ``cellkit.train.classifier`` (and the detector trainer beside it)."""
