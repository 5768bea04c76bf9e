"""Networks: the shared recurrent agent, IGM mixers, and the policy transforms (OPT)."""

from meigm.networks.agent import RNNAgent
from meigm.networks.mixers import QMixer, QPLEXMixer, VDNMixer, make_mixer
from meigm.networks.opt import OPT, IdentityTransform, MLPTransform, make_transform

__all__ = [
    "OPT",
    "IdentityTransform",
    "MLPTransform",
    "QMixer",
    "QPLEXMixer",
    "RNNAgent",
    "VDNMixer",
    "make_mixer",
    "make_transform",
]
