"""Captions made on the instance before training (`dataset.captions: auto`) or alone (`lorarun caption`)."""
