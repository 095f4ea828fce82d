"""Architecture policies: the ENAS LSTM controller, its REINFORCE trainer and a uniform policy."""
from controller.lstm import Controller, Sample, plan_decisions
from controller.reinforce import Reinforce
from controller.uniform import UniformPolicy

__all__ = ["Controller", "Reinforce", "Sample", "UniformPolicy", "plan_decisions"]
