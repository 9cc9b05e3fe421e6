"""Prediction: sliding-window inference, test-time mirroring, export to the input geometry."""
