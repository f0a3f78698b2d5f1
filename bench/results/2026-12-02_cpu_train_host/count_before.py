"""Host read-backs of one train_step of the code at PYTHONPATH (argv: counter file, points per room, config overrides) (the counter of bqnet_model/train/readbacks.py
at commit wt17, loaded from its file so that it also runs on the code before it)."""
import importlib.util, sys, time
import torch
spec = importlib.util.spec_from_file_location("readbacks", sys.argv[1])
rb = importlib.util.module_from_spec(spec); spec.loader.exec_module(rb)
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import load_config
from bqnet_model.train import EpochSampler, build_datasets, train_step
from bqnet_model.train.data import make_loader
cfg = load_config("config/tiny.yaml", ["inference.task=gres", "train.data_root=/tmp/synth_h", f"train.max_points_train={sys.argv[2]}", *sys.argv[3:]])
ds, _ = build_datasets(cfg, cfg.train.data_root, train=True)
ds.set_epoch(0)
torch.manual_seed(0)
model = BQNet(cfg.model)
opt = torch.optim.AdamW(model.param_groups(cfg.train), lr=1e-5)
it = iter(make_loader(ds, EpochSampler(len(ds), shuffle=True, seed=0), 8, 0, torch.device("cpu")))
train_step(model, model, next(it), opt, None, cfg, torch.device("cpu"), False, torch.bfloat16)
b = next(it)
with rb.ReadbackCounter("host") as c:
    train_step(model, model, b, opt, None, cfg, torch.device("cpu"), False, torch.bfloat16)
print(c.report(40))
