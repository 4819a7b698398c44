"""One module per method: its config (hyperparameters and the losses in math) beside its loss functions."""

from textrl.methods.base import METHODS, GenerationConfig, MethodConfig, get_method, register_method
from textrl.methods.bc import BCConfig, FilteredBCConfig, bc_loss, top_fraction
from textrl.methods.cql import CQLConfig, cql_loss, td_target
from textrl.methods.ilql import ILQLConfig, ilql_loss, shifted_log_probs
from textrl.methods.loss_parts import masked_mean, taken_and_logsumexp, token_cross_entropy
from textrl.methods.mc_returns import MCReturnsConfig, mc_returns_loss, returns_to_go

__all__ = ["METHODS", "GenerationConfig", "MethodConfig", "get_method", "register_method", "BCConfig",
           "FilteredBCConfig", "bc_loss", "top_fraction", "CQLConfig", "cql_loss", "td_target", "ILQLConfig", "ilql_loss", "shifted_log_probs", "masked_mean",
           "taken_and_logsumexp", "token_cross_entropy", "MCReturnsConfig", "mc_returns_loss",
           "returns_to_go"]
