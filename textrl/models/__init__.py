"""Models: the backbone loader, value heads and shared decoding (the losses, in textrl.methods, are
re-exported here for code that imported them from textrl.models)."""

from textrl.methods import ilql_loss, masked_mean, taken_and_logsumexp, token_cross_entropy
from textrl.models.backbone import freeze_bottom_layers, load_backbone, load_tokenizer_from_path
from textrl.models.context_cache import ContextCache
from textrl.models.decoding import ScoreFn, decode, sample_next
from textrl.models.heads import MLPHead, ValueHeads
from textrl.models.value_model import ValueModel, ValueOutput, gather_positions

__all__ = ["ContextCache", "load_backbone", "load_tokenizer_from_path", "freeze_bottom_layers", "decode", "sample_next",
           "ScoreFn", "MLPHead", "ValueHeads", "ilql_loss", "masked_mean", "taken_and_logsumexp",
           "token_cross_entropy", "ValueModel", "ValueOutput", "gather_positions"]
