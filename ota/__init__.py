"""Over-the-air software updates: images, signed metadata (Uptane: Image repository and
Director on python-tuf), campaigns in gated waves, vehicle check-in and reports."""
