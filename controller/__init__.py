"""Architecture policies: the ENAS LSTM controllers (micro and macro) and their REINFORCE trainer, a
uniform policy, regularized evolution and Optuna TPE (the last two propose / tell,
:mod:`controller.proposer`)."""
from controller.evolution import RegularizedEvolution
from controller.lstm import Controller
from controller.macro import MacroController
from controller.policy import LSTMPolicy, Sample, plan_decisions
from controller.proposer import Proposer
from controller.reinforce import ExtraLoss, Reinforce
from controller.tf_adam import TFAdam
from controller.tpe import TPEProposer
from controller.uniform import UniformPolicy

__all__ = ["Controller", "ExtraLoss", "LSTMPolicy", "MacroController", "Proposer", "Reinforce",
           "RegularizedEvolution", "Sample", "TFAdam", "TPEProposer", "UniformPolicy", "plan_decisions"]
