"""Dataset generators and converters shipped with mambaseg (no real data)."""
