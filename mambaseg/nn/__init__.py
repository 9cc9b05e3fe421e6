"""Building blocks for networks of any ``spatial_dims``."""
