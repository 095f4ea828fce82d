"""Retraining a derived architecture from scratch, then evaluation and export."""
