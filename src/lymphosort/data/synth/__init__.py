"""LymphoSim: a procedural bright-field simulator of lymphocytes in a microfluidic channel.

See docs/lymphosim.md for the image model, the class traits, the presets and the
calibration against real crops.
"""

from lymphosort.data.synth.crops import render_crops
from lymphosort.data.synth.flow import CellTruth, FlowFrame, render_flow
from lymphosort.data.synth.presets import PRESETS, SIM_VERSION, ClassMorphology, SimPreset, Trait, get_preset
from lymphosort.data.synth.writer import write_lymphomnist

__all__ = ["CellTruth", "FlowFrame", "PRESETS", "SIM_VERSION", "ClassMorphology", "SimPreset", "Trait", "get_preset",
           "render_crops", "render_flow", "write_lymphomnist"]
