"""The GPU path, proved on the CPU (issue #27): what a user with pretrained weights, AMP, several GPUs or
machines and a time budget meets first. The DDP items (one clock for all ranks, accumulation under DDP,
multi-node launch) are in test_ddp.py."""
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from torch.utils.data import DataLoader

from pipeline.cli import main
from pipeline.config import load_stage_config
from pipeline.data.cache import ImageCache
from pipeline.data.datasets import CachedPhotos
from pipeline.data.folds import read_folds
from pipeline.data.samplers import PKBatchSampler
from pipeline.errors import PipelineError
from pipeline.losses import build_loss
from pipeline.models import build_model
from pipeline.training.fit import fit
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
         "sampler.photos_per_class=2"]
# No batch statistics anywhere: a loss that is a mean over photos then decomposes per photo.
NO_BATCH_STATS = ["model.backbone=test_convnext", "model.neck_norm=layer", "train.warmup_epochs=0"]
TINY_SWIN = ["model.backbone=swin_tiny_patch4_window7_224", "model.input_size=[224,224]",
             "model.backbone_args={embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1]}"]


def config(*extra, model="test_arcface"):
    return load_stage_config(REPO / "configs", model, [*SMALL, *extra])


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu-path")
    sets = [x for s in SMALL for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return work, ImageCache.open(work), read_folds(work / "folds.csv")


def tiny_trainer(*extra, loss_wrapper=None, **kwargs):
    """A Trainer over 24 random photos of 6 whales (4 batches of 2 x 3 a epoch), as fit builds one."""
    from pipeline.training.loop import Trainer

    torch.manual_seed(0)
    cfg = config("sampler.classes_per_batch=2", "sampler.photos_per_class=3", *NO_BATCH_STATS, *extra)
    images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 4)
    model = build_model(cfg, (32, 32))
    loss = build_loss(cfg, 6, model.embedding_dim)
    if loss_wrapper is not None:
        loss = loss_wrapper(loss)
    sampler = PKBatchSampler(labels, 2, 3, seed=0)
    loader = DataLoader(CachedPhotos(images, np.arange(24), labels), batch_sampler=sampler)
    optimizer = torch.optim.AdamW([{"params": model.parameters()}, {"params": loss.parameters(), "lr": 0.01}], lr=0.001)
    return Trainer(model, loss, optimizer, loader, torch.device("cpu"), 2, cfg, 0, grad_clip=None, warmup_epochs=0,
                   **kwargs)


# ---------------------------------------------------------------- 2. MegaDescriptor's own preprocessing

@pytest.mark.parametrize("recipe", ["megadescriptor_zero_shot", "megadescriptor_finetune"])
def test_megadescriptor_offline_and_online_specs_agree(recipe, monkeypatch):
    from timm.models import _hub

    from pipeline.models.net import resolve_spec

    # The hub's config.json as timm reads it online (no network here); whatever it says about
    # normalisation, the recipe pins the model's own.
    monkeypatch.setattr(_hub, "load_model_config_from_hf", lambda name: (
        {"input_size": [3, 384, 384], "fixed_input_size": True, "mean": [0.485, 0.456, 0.406],
         "std": [0.229, 0.224, 0.225]}, "swin_large_patch4_window12_384", {}))
    online = resolve_spec(load_stage_config(REPO / "configs", recipe)["model"])
    offline = resolve_spec(load_stage_config(REPO / "configs", recipe, [
        "model.backbone=swin_large_patch4_window12_384", "model.pretrained=false",
        "model.pretrained_path=/data/weights/megadescriptor-l-384.bin"])["model"])
    for key in ("architecture", "img_size", "input_size", "mean", "std", "pool", "neck"):
        assert online[key] == offline[key], key
    assert offline["mean"] == [0.5] * 3 and offline["std"] == [0.5] * 3 and offline["input_size"] == [384, 384]
    # docs/training.md's line for the smaller MegaDescriptors: same normalisation, their own 224.
    small = resolve_spec(load_stage_config(REPO / "configs", recipe, [
        "model.backbone=swin_tiny_patch4_window7_224", "model.input_size=[224,224]"])["model"])
    assert small["mean"] == [0.5] * 3 and small["img_size"] == [224, 224]


# ---------------------------------------------------------------- 3. AMP resume from a run without AMP

def test_a_checkpoint_without_scaler_state_resumes_with_the_scaler_on(tmp_path):
    cpu_run = tiny_trainer()
    assert not cpu_run.scaler.is_enabled()
    cpu_run.run()
    cpu_run.save(tmp_path / "last.pt")
    from pipeline.training.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "last.pt")
    assert state["scaler"] == {}  # what a disabled GradScaler saves
    amp_run = tiny_trainer("train.epochs=4")
    amp_run.epochs = 4
    amp_run.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)  # as on a GPU with float16
    amp_run.restore(state)  # used to raise: "The source state dict is empty"
    assert amp_run.epoch == 2 and amp_run.scaler.get_scale() == 256.0
    amp_run.run()
    assert amp_run.epoch == 4
    # And the other way: a float16 run's scaler state into a run without one is ignored, not an error.
    amp_state = amp_run.state()
    assert amp_state["scaler"]["scale"] > 0
    tiny_trainer().restore(amp_state)


# ---------------------------------------------------------------- 4. weights of another width

def test_weights_of_another_width_are_refused_naming_the_file_and_tensor(tmp_path):
    torch.manual_seed(0)
    wider = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, embed_dim=32, depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 1, 1))
    path = tmp_path / "megadescriptor-wider.pth"
    torch.save(wider.state_dict(), path)
    cfg = load_stage_config(REPO / "configs", "megadescriptor_zero_shot", [
        *TINY_SWIN, "model.pretrained=false", f"model.pretrained_path={path}"])
    with pytest.raises(PipelineError, match=r"megadescriptor-wider\.pth: \d+ tensor\(s\) have another shape than "
                                            r"swin_tiny_patch4_window7_224's \(patch_embed\.proj\.weight is \[32, 3, 4, 4\] "
                                            r"in the file, \[16, 3, 4, 4\] in the model"):
        build_model(cfg)


# ---------------------------------------------------------------- 5. memory levers

def saved_bytes(net, x) -> tuple[int, dict]:
    """Bytes autograd keeps for the backward pass, and the gradients of one forward + backward."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    net.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    out.square().sum().backward()
    return total, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations():
    from pipeline.models.net import set_grad_checkpointing

    cfg = config("model.backbone=test_vit", "model.neck_norm=layer", "model.grad_checkpointing=true")
    torch.manual_seed(0)
    net = build_model(cfg).train()
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    plain_bytes, plain = saved_bytes(net, x)
    set_grad_checkpointing(net, cfg["model"]["grad_checkpointing"])
    assert net.backbone.grad_checkpointing
    checkpointed_bytes, checkpointed = saved_bytes(net, x)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
    print(f"activations kept for backward: {plain_bytes} bytes plain, {checkpointed_bytes} checkpointed")
    assert checkpointed_bytes < 0.6 * plain_bytes


def test_grad_checkpointing_is_applied_by_fit_and_switching_it_resumes(prepared, tmp_path, monkeypatch):
    import pipeline.training.fit as fit_module

    work, cache, folds = prepared
    seen = []
    real = fit_module.set_grad_checkpointing
    monkeypatch.setattr(fit_module, "set_grad_checkpointing", lambda net, on: (seen.append(on), real(net, on)))
    fit(config("train.epochs=1", "model.backbone=test_vit", "model.grad_checkpointing=true"), cache, folds, 0, tmp_path)
    # Out of memory mid-run? Switching it resumes the same run (it changes no weight).
    fit(config("train.epochs=2", "model.backbone=test_vit"), cache, folds, 0, tmp_path)
    assert seen == [True, False]
    assert list(pd.read_csv(tmp_path / "log.csv")["epoch"]) == [1, 2]


def test_two_micro_batches_of_half_the_batch_take_the_step_of_the_whole_batch():
    whole, halves = tiny_trainer(), tiny_trainer(accumulate_steps=2)  # the same initial weights
    images, labels, groups = next(iter(whole.loader))
    assert len(images) == 6 and len(set(labels[:3].tolist())) == 1  # K photos of one whale, then the next
    loss_whole = whole._step(images, labels, groups)
    # Odd-sized halves would weigh photos unequally: 6 photos split into 2 x 3.
    loss_halves = halves._step(images, labels, groups)
    assert loss_halves == pytest.approx(loss_whole, rel=1e-5)
    pairs = [*zip(whole.model.named_parameters(), halves.model.parameters()),
             *zip(whole.loss.named_parameters(), halves.loss.parameters())]
    assert all(a.grad is not None for (_, a), _ in pairs)
    for (name, a), b in pairs:  # equal up to float summation order, against each tensor's own scale
        assert (b.grad - a.grad).abs().max() <= 1e-5 * a.grad.abs().max() + 1e-12, name
    with pytest.raises(PipelineError, match="train.accumulate_steps"):
        tiny_trainer(accumulate_steps=4)._step(images, labels, groups)


def test_accumulation_trains_through_fit_like_the_whole_batch(prepared, tmp_path):
    work, cache, folds = prepared
    runs = {}
    for steps in (1, 2):
        fit(config("train.epochs=2", *NO_BATCH_STATS, f"train.accumulate_steps={steps}"), cache, folds, 0,
            tmp_path / str(steps))
        runs[steps] = pd.read_csv(tmp_path / str(steps) / "log.csv")
    assert list(runs[1]["steps"]) == list(runs[2]["steps"])
    assert (abs(runs[1]["loss"] - runs[2]["loss"]) / runs[1]["loss"]).max() < 1e-3
    with pytest.raises(PipelineError, match="train.accumulate_steps: each process's batch of 8 photos does not "
                                            "split into 3"):
        fit(config("train.epochs=1", "train.accumulate_steps=3"), cache, folds, 0, tmp_path / "3")


# ---------------------------------------------------------------- 6. learning rates and weight decay per part

def test_backbone_multiplier_and_no_decay_groups():
    from pipeline.training.optim import build_optimizer

    cfg = config("model.backbone=test_vit", "train.lr=0.001", "train.weight_decay=0.05",
                 "train.backbone_lr_multiplier=0.1", "train.no_decay=true", "loss.lr_multiplier=10")
    net = build_model(cfg)
    loss = build_loss(cfg, 5, net.embedding_dim)
    optimizer = build_optimizer(net, loss, cfg)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    names = dict(net.named_parameters())
    assert len(setting) == len(names) + len(list(loss.parameters()))  # every parameter, once
    assert setting[id(names["backbone.blocks.0.attn.qkv.weight"])] == pytest.approx((1e-4, 0.05))
    for exempt in ("backbone.pos_embed", "backbone.cls_token", "backbone.blocks.0.norm1.weight",
                   "backbone.blocks.0.attn.qkv.bias"):
        assert setting[id(names[exempt])] == pytest.approx((1e-4, 0.0)), exempt
    assert setting[id(names["neck.weight"])] == pytest.approx((1e-3, 0.05))
    assert setting[id(names["neck.bias"])] == pytest.approx((1e-3, 0.0))
    assert setting[id(names["bn.weight"])] == pytest.approx((1e-3, 0.0))
    centres = next(loss.parameters())
    assert setting[id(centres)] == pytest.approx((1e-2, 0.05))
    # The defaults keep the two groups of checkpoints written before these settings (they still resume).
    plain = build_optimizer(net, loss, config("model.backbone=test_vit"))
    assert len(plain.param_groups) == 2


def test_the_finetune_recipe_sets_them_and_fit_keeps_their_ratio(prepared, tmp_path):
    recipe = load_stage_config(REPO / "configs", "megadescriptor_finetune")
    t = recipe["train"]
    assert t["no_decay"] and t["lr"] * t["backbone_lr_multiplier"] == pytest.approx(2e-5)
    assert t["lr"] * recipe["loss"]["lr_multiplier"] == pytest.approx(2e-3)
    work, cache, folds = prepared
    fit(config("train.epochs=1", "model.backbone=test_vit", "train.backbone_lr_multiplier=0.1", "train.no_decay=true"),
        cache, folds, 0, tmp_path)
    groups = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    lrs = {g["part"]: g["lr"] for g in groups}
    assert set(lrs) == {"backbone", "backbone (no decay)", "neck", "neck (no decay)", "loss"}
    assert lrs["backbone"] / lrs["neck"] == pytest.approx(0.1)  # the schedule scales every group alike
    # A run whose groups changed is refused with the file's name, not a ValueError.
    with pytest.raises(PipelineError, match=r"last\.pt: the optimiser's parameter groups differ"):
        fit(config("train.epochs=2", "model.backbone=test_vit"), cache, folds, 0, tmp_path)


# ---------------------------------------------------------------- 7. precision follows the config

def test_amp_dtype_follows_the_config_and_the_gpu(monkeypatch):
    from pipeline.training.device import amp_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cuda, False) is None and amp_dtype(cpu, True) is None
    assert amp_dtype(cuda, True, "auto") is torch.bfloat16
    assert amp_dtype(cuda, True, "float16") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cuda, True, "auto") is torch.float16
    with pytest.raises(PipelineError, match="train.amp_dtype: this GPU has no bfloat16"):
        amp_dtype(cuda, True, "bfloat16")
    with pytest.raises(PipelineError, match="train.amp_dtype: unknown"):
        amp_dtype(cuda, True, "float8")


def test_embedding_follows_train_amp(prepared, monkeypatch):
    import pipeline.stages.embed as embed_stage

    work, _, _ = prepared
    args = ["--work", str(work), "--configs", str(REPO / "configs"), "--model", "test_arcface",
            "--folds-file", str(work / "folds.csv"), "--folds", "0",
            *(x for s in [*SMALL, "train.epochs=1"] for x in ("--set", s))]
    assert main(["train", *args]) == 0
    asked = []
    real = embed_stage.embed_rows
    monkeypatch.setattr(embed_stage, "embed_rows", lambda *a, **k: (asked.append((k.get("amp", True),
                                                                                  k.get("amp_dtype", "auto"))),
                                                                     real(*a, **k))[1])
    assert main(["embed", *args, "--set", "train.amp=false", "--force"]) == 0
    assert asked and all(a == (False, "auto") for a in asked)
    assert main(["embed", *args, "--set", "train.amp_dtype=float16", "--force"]) == 0
    assert asked[-1] == (True, "float16")


class NanOnCalls(torch.nn.Module):
    """A loss that returns NaN on the given calls (as an overflowing float16 forward would)."""

    def __init__(self, loss, calls):
        super().__init__()
        self.inner, self.calls, self.count = loss, set(calls), 0

    def forward(self, embeddings, labels):
        self.count += 1
        value = self.inner(embeddings, labels)
        return value * float("nan") if self.count in self.calls else value


def test_non_finite_steps_are_skipped_and_counted_under_the_scaler():
    trainer = tiny_trainer(loss_wrapper=lambda loss: NanOnCalls(loss, {2, 5}))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # float16's loss scaling, on the CPU
    trainer.run()
    assert trainer.step == 8 and trainer.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(np.isfinite(row["loss"]) for row in trainer.history)  # a skipped step is not in the mean
    assert trainer.state()["skipped_steps"] == 2
    # Many in a row: that is divergence, not an overflow, and training stops.
    stuck = tiny_trainer(loss_wrapper=lambda loss: NanOnCalls(loss, range(1, 100)), max_skipped_steps=3)
    stuck.scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        stuck.run()
    # Without loss scaling (float32, bfloat16) a non-finite loss stops at once.
    with pytest.raises(FloatingPointError, match="loss became nan"):
        tiny_trainer(loss_wrapper=lambda loss: NanOnCalls(loss, {1})).run()


# ---------------------------------------------------------------- 8. make gpu-check cannot pass untested

def test_gpu_check_fails_where_the_driver_sees_a_gpu_that_torch_cannot_use(monkeypatch, capsys):
    from pipeline.diagnostics import gpu_check

    monkeypatch.setattr(gpu_check, "nvidia_gpus", lambda: ["GPU 0: NVIDIA H200 (UUID: GPU-0)"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only wheel, or an old driver
    assert gpu_check.main() == 1
    out = capsys.readouterr().out
    assert "FAIL  torch on the GPU: nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H200" in out
    monkeypatch.setattr(gpu_check, "nvidia_gpus", lambda: [])  # no driver: nothing to check, and it says what
    assert gpu_check.main() == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if line.startswith("SKIP")]
    for name in ("torch on the GPU", "demo chain on CUDA with AMP", "retrieval index flat", "retrieval index ivf",
                 "DDP over NCCL with ArcFace", "timing: training step and embedding batch"):
        assert any(name in line for line in skipped), name


def test_gpu_checks_run_on_the_cpu_where_they_can(tiny_synth, tmp_path, capsys):
    """The code of the DDP comparison and the timings, which only a GPU machine runs for real, run here on
    gloo and the CPU with a tiny network."""
    from pipeline.diagnostics import gpu_check

    work = tmp_path / "work"
    sets = [x for s in gpu_check.DDP_SETS for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    ok, detail = gpu_check.one_against_two(work)
    assert ok and detail.startswith("2 processes on cpu"), detail
    tiny = ["model.backbone=test_vit", "model.pretrained=false", "model.input_size=[64,64]", "embed.batch_size=4",
            "sampler.classes_per_batch=2", "train.accumulate_steps=2"]
    assert gpu_check.timings("cpu", tiny, batches=1) == "TIME"
    out = capsys.readouterr().out
    assert "ms per training step of 8 photos" in out and "ms per embedding batch of 4 photos" in out


def test_fit_records_where_and_how_it_trained(prepared, tmp_path):
    """What gpu-check reads back to assert CUDA and AMP."""
    work, cache, folds = prepared
    fit(config("train.epochs=1"), cache, folds, 0, tmp_path)
    state = torch.load(tmp_path / "final.pt", weights_only=True)
    assert (state["device"], state["precision"], state["processes"], state["skipped_steps"]) == ("cpu", "float32", 1, 0)


# ---------------------------------------------------------------- 9. one faiss, chosen per machine

def make_dry(*args):
    # Under `make test` the parent's flags would add "Entering directory" lines: run as a top-level make.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_install_stamp_follows_the_faiss_build(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed-cpu").touch()  # made on a machine without a GPU
    assert "pip install" not in make_dry("install", "FAISS=cpu", f"VENV={venv}")
    on_gpu = make_dry("install", "FAISS=gpu", f"VENV={venv}")  # the same venv, reused on a GPU machine
    lines = on_gpu.splitlines()
    uninstall = next(i for i, line in enumerate(lines) if "pip uninstall" in line)
    install = next(i for i, line in enumerate(lines) if ".[dev,weights,gpu]" in line)
    assert uninstall < install and all(b in lines[uninstall] for b in ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12"))
    assert lines[-1] == f"touch {venv}/.installed-gpu"
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == ["faiss-gpu>=1.14.3"] and extras["cpu"] == ["faiss-cpu>=1.8"]


# ---------------------------------------------------------------- 10. beyond one machine

def test_a_global_batch_that_does_not_split_over_the_processes_is_a_config_error(prepared, tmp_path, monkeypatch):
    import pipeline.training.fit as fit_module
    from pipeline.training.distributed import DistInfo

    work, cache, folds = prepared
    monkeypatch.setattr(fit_module, "setup", lambda: DistInfo(rank=0, world=3, backend="gloo"))
    with pytest.raises(PipelineError, match=r"sampler.classes_per_batch: the global batch .* 4 x 2.* does not split "
                                            r"over 3 processes"):
        fit(config("train.epochs=1"), cache, folds, 0, tmp_path)


def test_make_train_launches_several_machines_through_torchruns_rendezvous():
    dry = make_dry("-o", "install", "train", "NNODES=2", "NPROC=4", "RDZV_ENDPOINT=node0:29400", "RDZV_ID=job7")
    assert ("torchrun --nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=node0:29400 --rdzv_id=job7 --nproc_per_node=4 "
            "-m pipeline train") in dry
    assert "--standalone --nproc_per_node=2" in make_dry("-o", "install", "train", "NPROC=2")
    run = subprocess.run(["make", "-n", "-o", "install", "train", "NNODES=2"], cwd=REPO, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")})
    assert run.returncode != 0 and "NNODES=2 needs RDZV_ENDPOINT=host:port" in run.stderr


def test_zero_shot_embeds_its_network_once_for_all_folds(prepared, tmp_path, monkeypatch):
    import pipeline.stages.embed as embed_stage

    work, _, _ = prepared
    torch.manual_seed(3)
    weights = tmp_path / "swin.pth"
    torch.save(timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, embed_dim=16, depths=(1, 1, 1, 1),
                                 num_heads=(1, 1, 1, 1)).state_dict(), weights)
    sets = [*SMALL, *TINY_SWIN, "model.pretrained=false", f"model.pretrained_path={weights}"]
    args = ["--work", str(work), "--configs", str(REPO / "configs"), "--model", "megadescriptor_zero_shot",
            "--folds-file", str(work / "folds.csv"), "--folds", "0,1", *(x for s in sets for x in ("--set", s))]
    assert main(["train", *args]) == 0
    calls = []
    real = embed_stage.embed_pooled
    monkeypatch.setattr(embed_stage, "embed_pooled", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    pooled_before = set((work / "cache" / "pooled").glob("*.npy"))
    assert main(["embed", *args]) == 0
    assert len(calls) == 2  # train and test photos of one network, not of each fold's copy
    folder = work / "embeddings" / "megadescriptor_zero_shot"
    for name in ("train.npy", "test.npy"):
        assert np.array_equal(np.load(folder / "fold0" / name), np.load(folder / "fold1" / name))
    assert (folder / "fold1" / "index.csv").read_text() == (folder / "fold0" / "index.csv").read_text()
    # Centred zero-shot features differ per fold (each fold's own mean): embedded per fold, from the
    # backbone's pooled features computed once (one file beside the cache for both runs).
    calls.clear()
    assert main(["train", *args, "--set", "model.centre=true", "--force"]) == 0
    assert main(["embed", *args, "--set", "model.centre=true", "--force"]) == 0
    assert len(calls) == 4
    assert len(set((work / "cache" / "pooled").glob("*.npy")) - pooled_before) == 1
    assert not np.array_equal(np.load(folder / "fold0" / "train.npy"), np.load(folder / "fold1" / "train.npy"))
