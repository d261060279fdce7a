"""bertclf: fine-tune BERT models for Chinese or English text classification."""

__version__ = "0.1.0"
