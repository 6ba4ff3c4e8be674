"""lorarun: rent a GPU, train a LoRA, bring it home, stop the billing."""

__version__ = "0.1.0"
