"""BQNet network: backbone, text encoder, decoder (CFR, PSC, DQF), heads, losses, batch inputs.

Kept import-light on purpose: importing ``bqnet_model.model`` loads no torch module, no text
model and no spconv. Import what you need from the submodules, e.g.
``from bqnet_model.model.decoder import BQNetDecoder, DecoderConfig``,
``from bqnet_model.model.losses import bqnet_loss, LossConfig``,
``from bqnet_model.model.heads import select_res, select_gres``,
``from bqnet_model.model.query_sampling import farthest_point_sample``.
"""
