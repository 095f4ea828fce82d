"""Architecture policies: the ENAS LSTM controllers (micro and macro), their REINFORCE trainer and a
uniform policy."""
from controller.lstm import Controller
from controller.policy import LSTMPolicy, Sample, plan_decisions
from controller.macro import MacroController
from controller.reinforce import ExtraLoss, Reinforce
from controller.tf_adam import TFAdam
from controller.uniform import UniformPolicy

__all__ = ["Controller", "ExtraLoss", "LSTMPolicy", "MacroController", "Reinforce", "Sample", "TFAdam",
           "UniformPolicy", "plan_decisions"]
