"""Architecture policies: the ENAS LSTM controller, its REINFORCE trainer and a uniform policy."""
from controller.lstm import Controller, Sample, plan_decisions
from controller.reinforce import Reinforce
from controller.tf_adam import TFAdam
from controller.uniform import UniformPolicy

__all__ = ["Controller", "Reinforce", "Sample", "TFAdam", "UniformPolicy", "plan_decisions"]
