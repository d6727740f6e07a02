"""The platform itself: the model catalog and health."""
