"""The parts of the training loop: the data on the device, the network, its FSR losses, optimiser and schedule
prepared by Accelerate, one epoch of adversarial training, and clean and PGD accuracy on a split of the data."""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import dataclass

import timm
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from tqdm.auto import tqdm

from fsr_models.data import load_dataset, to_float
from fsr_models.defenses import DefenseOutput, aux_defense, defense_loss
from fsr_models.evaluation.attacks import nfgsm, pgd
from fsr_models.evaluation.protocol import correct
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.networks import ARCHITECTURES, DEFENSE_NETWORKS, DEFENSE_STAGE_ARGS
from fsr_models.fsr import FSRLoss
from fsr_models.hub.folders import load_fsr_heads, load_model
from fsr_models.models._build import CHECKOUT_FOLDERS, NoPublishedWeights
from fsr_models.models._init import init_vgg
from fsr_models.training.config import ConfigError, TrainConfig, scaled_lr
from fsr_models.training.losses import classification_loss, trades_kl

ZOO_NETWORKS = [name for pair in ARCHITECTURES.values() for name in pair]


class NonFiniteLoss(RuntimeError):
    """A step's loss was NaN or infinite; the message says where and what was kept."""


@dataclass
class TrainingData:
    """The training images (uint8, on the device) and the validation slice held out from their end."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    label_names: list[str] | None
    num_classes: int


def training_data(cfg: TrainConfig, device: torch.device) -> TrainingData:
    """uint8 tensors on the device (a CIFAR-sized set fits any GPU), augmented there per batch."""
    images, labels, label_names = load_dataset(
        cfg.dataset, "train", cfg.data_dir, cfg.train_limit, download=cfg.download
    )
    if cfg.val_size >= len(images):
        raise ConfigError(f"val_size {cfg.val_size} leaves no training images out of {len(images)}")
    n_train = len(images) - cfg.val_size
    if n_train < cfg.batch_size:
        raise ConfigError(f"{n_train} training images make no batch of {cfg.batch_size}: lower batch_size or val_size")
    num_classes = len(label_names) if label_names else int(labels.max()) + 1
    return TrainingData(
        images[:n_train].to(device),
        labels[:n_train].to(device),
        images[n_train:].to(device),
        labels[n_train:].to(device),
        label_names,
        num_classes,
    )


def build_model(cfg: TrainConfig, num_classes: int, label_names) -> torch.nn.Module:
    """The network to train: one of the zoo's (with the cfg of the paper's tag, where there is one), FSR attached
    to any other timm CNN (`model` its name; `model_args` the backbone's arguments, `fsr_stages`, `base_pretrained`
    for its pretrained weights), or, for fine-tuning, the zoo model `cfg.init` with a new head when the classes
    differ."""
    for key, network in zip(DEFENSE_STAGE_ARGS, DEFENSE_NETWORKS):
        if key in cfg.model_args and cfg.model != network:  # saved, it would be named as another network
            raise ConfigError(f"model_args {key} places the defense of {network}: give model: {network}")
        if cfg.model == network and (not cfg.model_args.get(key, True) or cfg.model_args.get("fsr_stages")):
            raise ConfigError(
                f"model {network} is trained with its defense (model_args {key} not empty, no fsr_stages): without "
                "it the network is resnet18_plain, with FSR resnet18_fsr"
            )
    if cfg.init:
        try:
            model = load_model(cfg.init, num_classes=num_classes, **cfg.model_args)
        except NoPublishedWeights as e:  # said in this command's words: the form of init that works
            raise ConfigError(
                f"init={cfg.init} {e.reason}; or give init=<the folder of trained weights> (a checkout of fsr-zoo "
                f"holds them in {CHECKOUT_FOLDERS})"
            ) from None
        except ValueError as e:  # a folder or repository that is not a zoo model
            raise ConfigError(f"init={cfg.init}: {e}") from None
    elif cfg.model in ZOO_NETWORKS or cfg.model in DEFENSE_NETWORKS:
        tagged = f"{cfg.model}.{cfg.method}_{cfg.dataset}"
        name = tagged if tagged in timm.list_models(cfg.model, include_tags=True) else cfg.model
        model = timm.create_model(name, num_classes=num_classes, **cfg.model_args)
    elif timm.is_model(cfg.model):
        try:
            model = timm.create_model("fsr_attached", base_model=cfg.model, num_classes=num_classes, **cfg.model_args)
            model.check_stages()
        except ValueError as e:  # a backbone or stages FSR cannot take
            raise ConfigError(f"model {cfg.model}: {e}") from None
    else:
        raise ConfigError(
            f"model {cfg.model!r} is neither one of the zoo's networks {ZOO_NETWORKS + list(DEFENSE_NETWORKS)} nor "
            "a timm model name (see timm.list_models()), to which FSR is attached"
        )
    if cfg.method in ("trades", "mart") and (defense := aux_defense(model)):
        raise ConfigError(
            f"{defense.upper()} trains with its own loss (method at or natural, its heads weighted by "
            "defense_beta): the TRADES and MART versions of CAS and CIFS are not in the zoo"
        )
    # Trained on the data set's images as they are: its input size (and the feature map there), no crop, no other
    # test size
    input_size = DATASETS[cfg.dataset].input_size
    if not cfg.init and model.pretrained_cfg["architecture"] == "fsr_attached":  # its timm CNN's input size
        reduction = model.feature_info[-1]["reduction"]
        model.pretrained_cfg = {**model.pretrained_cfg, "pool_size": tuple(-(-s // reduction) for s in input_size[1:])}
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "input_size": input_size,
        "crop_pct": 1.0,
        "test_input_size": None,
        "test_crop_pct": None,
        "num_classes": num_classes,
        "tag": cfg.model_tag,
        "label_names": list(label_names) if label_names else None,
    }
    return model


def compile_available(mode: str, device: torch.device, accelerator: Accelerator) -> bool:
    """Whether torch.compile works here; if not, one line says why and the run goes on eager (no C++ compiler for
    inductor's CPU backend, no Triton on a GPU, an unsupported Python)."""
    try:  # a tiny graph proves the toolchain before hours of training depend on it
        torch.compile(lambda t: t * 2 + 1, mode=mode)(torch.ones(2, device=device))
        return True
    except Exception as e:  # noqa: BLE001 - any failure of the toolchain means: run eager
        reason = (str(e).splitlines() or [""])[0][:200]
        accelerator.print(f"compile={mode} is not available here ({type(e).__name__}: {reason}); running eager")
        return False


@dataclass
class Training:
    """What an SGD step needs: the network (`net`, unwrapped: attacks and evaluation run on it without DDP hooks or
    gradient sync), its prepared (DDP-wrapped where there is DDP) form `model`, the FSR losses (`fsr_loss` prepared,
    `heads` unwrapped; None for a plain network), the optimiser and its base learning rate `lr`, and the (compiled
    or eager) networks the attack and the step run through."""

    net: torch.nn.Module
    model: torch.nn.Module
    fsr_loss: torch.nn.Module | None
    heads: FSRLoss | None
    optimizer: torch.optim.Optimizer
    attack_net: torch.nn.Module
    step_model: torch.nn.Module
    lr: float


def build_training(
    cfg: TrainConfig, data: TrainingData, accelerator: Accelerator, progress: dict, resuming: bool
) -> Training:
    """The network, its FSR losses and SGD, prepared by Accelerate and compiled if asked. The learning rate of each
    step is set by `train_epoch` from the step count and the milestones that `progress` holds (progress.json), so a
    checkpoint needs no pickled scheduler."""
    model = build_model(cfg, data.num_classes, data.label_names)
    fsr_loss = FSRLoss.for_model(model, cfg.lambda_sep, cfg.lambda_rec) if model.fsr_modules() else None
    if cfg.weight_init == "vgg" and not cfg.init:
        if cfg.model not in ZOO_NETWORKS:
            raise ConfigError(f"weight_init=vgg re-draws every layer: {cfg.model} keeps its own (timm's) init")
        init_vgg(list(model.modules()) + (list(fsr_loss.modules()) if fsr_loss else []))
    if cfg.init and fsr_loss and not resuming:  # the trained heads, unless the checkpoint brings its own
        accelerator.print(load_fsr_heads(cfg.init, fsr_loss))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + (list(fsr_loss.parameters()) if fsr_loss else [])
    lr = scaled_lr(cfg.lr_per_128, cfg.batch_size)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if fsr_loss:
        model, fsr_loss, optimizer = accelerator.prepare(model, fsr_loss, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    net = accelerator.unwrap_model(model)
    heads = accelerator.unwrap_model(fsr_loss) if fsr_loss else None
    attack_net, step_model = net, model
    if cfg.compile != "none" and compile_available(cfg.compile, accelerator.device, accelerator):
        attack_net = compiled(input_gradient_twin(net), cfg.compile)  # the eval-mode attack's graphs
        step_model = compiled(model, cfg.compile)  # the train-mode step
    return Training(net, model, fsr_loss, heads, optimizer, attack_net, step_model, lr)


def compiled(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """torch.compile at static shapes: the attack runs at the training batch and at the validation batch, and by
    default dynamo would compile the second as a graph of any batch size (measured: a recompile on the batch
    dimension, guarded `16 <= x.size()[0]`), slower than a graph of its own size and recompiled for the tail."""
    return torch.compile(module, mode=mode, dynamic=False)


def input_gradient_twin(net: torch.nn.Module) -> torch.nn.Module:
    """`net` over the same parameter and buffer tensors, its parameters not requiring gradients: what the attack
    runs through when compiled. A compiled backward (AOTAutograd's joint graph) computes the gradient of every input
    that requires one, so through `net` it would compute each parameter's gradient at every attack step, and the
    attack would throw them away; through the twin it computes the image's alone. SGD updates `net`'s tensors in
    place, so they are the twin's too (build it after `accelerator.prepare`, which may move them)."""
    shared = {id(p): torch.nn.Parameter(p.detach(), requires_grad=False) for p in net.parameters()}
    shared |= {id(b): b for b in net.buffers()}
    return copy.deepcopy(net, shared)


def saved_bytes_per_image(net: torch.nn.Module, device: torch.device, bf16: bool) -> float:
    """What autograd keeps per image for the input gradient of an attack step through `net` (eval mode): the memory a
    large attack batch needs, measured on two images."""
    total = 0

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    # not torch.rand: the global random state (restored on resume) must not move, or a resumed run would differ
    x = torch.full((2, *net.pretrained_cfg["input_size"]), 0.5, device=device, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            net.eval()(x)
    return total / 2


def free_memory(device: torch.device) -> int:
    """Bytes free on the device: the GPU's, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def validation_batch(cfg: TrainConfig, t: Training, n_val: int, accelerator: Accelerator) -> int | None:
    """The global batch of the compiled validation: the whole held-out slice at once (one graph, no launch per small
    batch) where its attack's saved activations fit half of the device's free memory, else the fewest equal batches
    that do (measured: WRN-34-10 saves 81 MiB per image in fp32, 41 in bf16, so 1,000 images at once would not fit
    an 80 GB GPU in fp32); a multiple of the processes. None when the attack runs eagerly (the training batch)."""
    if t.attack_net is t.net:
        return None
    per_image = saved_bytes_per_image(t.net, accelerator.device, cfg.precision == "bf16")
    fits = max(1, int(free_memory(accelerator.device) / 2 // per_image)) * accelerator.num_processes
    pieces = math.ceil(n_val / fits)
    batch = math.ceil(n_val / pieces / accelerator.num_processes) * accelerator.num_processes
    return min(batch, n_val // accelerator.num_processes * accelerator.num_processes)


def lr_factor(cfg: TrainConfig, progress: dict, steps_per_epoch: int) -> float:
    """The learning rate of the next SGD step (`progress["step"]`, 0-based) over the base lr. Schedule "step": a
    linear warm-up, then x lr_gamma at each milestone epoch; "cyclic": 0 up to 1 at half the plan's steps and down to
    0 at its end (torch's CyclicLR as N-FGSM's code steps it, so its first step has lr 0)."""
    step, epochs = progress["step"], progress["epochs"]
    if cfg.lr_schedule == "cyclic":
        return 1 - abs(2 * step / (epochs * steps_per_epoch) - 1)
    warmup_steps, milestones, gamma = cfg.warmup_epochs * steps_per_epoch, progress["milestones"], cfg.lr_gamma
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * gamma ** sum(step // steps_per_epoch >= m for m in milestones)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Pad 4 (zeros) + random 32x32 crop + horizontal flip, per image, on whatever device x lives."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    flip = torch.rand(n, 1, 1, device=x.device) < 0.5
    cols = torch.where(flip, 2 * dx + w - 1 - cols, cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def shard_batches(n: int, batch_size: int, accelerator: Accelerator, generator: torch.Generator | None):
    """This process's part of each global batch: disjoint across processes, the same batches for any count."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size][accelerator.process_index :: accelerator.num_processes]


def adversarial_loss(
    cfg: TrainConfig, attack_net, step_model, fsr_loss, x: torch.Tensor, y: torch.Tensor, defense: str | None = None
):
    """One step's losses: the inner maximisation on `attack_net` (the unwrapped network) in eval mode, then the
    method's loss (+ the FSR losses) of the adversarial batch through `step_model` (DDP-wrapped where there is
    DDP) in train mode. Returns (loss, classification loss, FSR loss, adversarial logits).

    `defense` "cas" or "cifs" (`aux_defense` of the network): as their authors train, the attack maximises and the
    step minimises their joint loss (`defense_loss`), the attack with the masks of the network's predictions (eval
    mode), the step with those of the labels."""
    attack_net.eval()  # BN statistics, deterministic FSR mask
    logits_nat = None
    attack_loss = None
    if defense is not None:

        def attack_loss(out: DefenseOutput, target: torch.Tensor) -> torch.Tensor:
            return defense_loss(defense, out, target, cfg.defense_beta, reduction="sum")

        attack_net = functools.partial(attack_net, return_defense=True)
    if cfg.method == "natural":
        x_adv = x
    elif cfg.method == "trades":  # TRADES and MART start from x + 0.001 N(0, 1), as their code does
        with torch.no_grad():
            target_nat = attack_net(x)
        x_adv = pgd(
            attack_net,
            x,
            target_nat,
            cfg.eps,
            cfg.attack_step_size,
            cfg.attack_steps,
            loss_fn=trades_kl,
            start=x + 0.001 * torch.randn_like(x),
        )
    elif cfg.attack == "nfgsm":
        x_adv = nfgsm(attack_net, x, y, cfg.eps, cfg.attack_step_size, cfg.attack_noise, attack_loss)
    elif cfg.method == "mart":
        x_adv = pgd(
            attack_net, x, y, cfg.eps, cfg.attack_step_size, cfg.attack_steps, start=x + 0.001 * torch.randn_like(x)
        )
    else:
        x_adv = pgd(
            attack_net, x, y, cfg.eps, cfg.attack_step_size, cfg.attack_steps, cfg.random_start, loss_fn=attack_loss
        )

    step_model.train()
    if cfg.method in ("trades", "mart"):  # natural batch first, as their code does (BN statistics)
        logits_nat = step_model(x)
    if defense is not None:
        out_adv = step_model(x_adv, targets=y, return_defense=True)
        logits_adv = out_adv.logits
        loss_cls = defense_loss(defense, out_adv, y, cfg.defense_beta)
    else:
        out_adv = step_model(x_adv, return_fsr=fsr_loss is not None)
        logits_adv = out_adv.logits if fsr_loss is not None else out_adv
        loss_cls = classification_loss(cfg.method, logits_adv, y, logits_nat, cfg.beta)
    loss_fsr = fsr_loss(out_adv, y) if fsr_loss is not None else torch.zeros((), device=y.device)
    return loss_cls + loss_fsr, loss_cls, loss_fsr, logits_adv


FINITE_CHECK_EVERY = 25  # SGD steps between reads of the non-finite-loss note


def raise_if_non_finite(first_bad: torch.Tensor, epoch: int) -> None:
    """NonFiniteLoss naming the first step (and its losses) that a process noted in `first_bad` (one row per
    process: step or -1, classification loss, FSR loss)."""
    noted = [row for row in first_bad.tolist() if row[0] >= 0]
    if noted:
        step, loss_cls, loss_fsr = min(noted)
        raise NonFiniteLoss(
            f"non-finite loss at epoch {epoch + 1} step {int(step)} (classification {loss_cls:g}, FSR {loss_fsr:g})"
        )


def train_epoch(
    cfg: TrainConfig, t: Training, data: TrainingData, accelerator: Accelerator, epoch: int, progress: dict
) -> dict:
    """One epoch of SGD steps (epoch is 0-based); returns its figures (lr of the last step, mean losses, training
    accuracy on the adversarial batches, images). A non-finite loss raises NonFiniteLoss within FINITE_CHECK_EVERY
    steps and at the epoch's end, before anything is saved: the run keeps its last checkpoint."""
    device = accelerator.device
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch) if cfg.shuffle else None
    batches = list(shard_batches(len(data.train_x), cfg.batch_size, accelerator, generator))
    steps_per_epoch = len(data.train_x) // cfg.batch_size
    totals = torch.zeros(4, device=device)  # loss, classification loss, FSR loss, correct (adv)
    first_bad = torch.full((3,), -1.0, device=device)  # the first step with a non-finite loss, and its two losses
    defense = aux_defense(t.net)
    for step, idx in enumerate(
        tqdm(batches, desc=f"epoch {epoch + 1}", disable=not accelerator.is_main_process, leave=False)
    ):
        x, y = to_float(data.train_x[idx]), data.train_y[idx]
        if cfg.augment:
            x = augment(x)  # its gather leaves x channels-last in memory
        # The parameters' memory format: a channels-last batch through contiguous weights gives channels-last
        # weight gradients, which DDP's buckets refuse ("Grad strides do not match bucket view strides") and copy
        x = x.contiguous(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
        loss, loss_cls, loss_fsr, logits_adv = adversarial_loss(
            cfg, t.attack_net, t.step_model, t.fsr_loss, x, y, defense
        )
        # Noted on the device and read every FINITE_CHECK_EVERY steps: a read per step would wait for the GPU each time
        new_bad = ~torch.isfinite(loss.detach()) & (first_bad[0] < 0)
        this_step = torch.stack([torch.full((), step + 1.0, device=device), loss_cls.float(), loss_fsr.float()])
        first_bad = torch.where(new_bad, this_step.detach(), first_bad)
        if (step + 1) % FINITE_CHECK_EVERY == 0 or step + 1 == len(batches):
            raise_if_non_finite(accelerator.gather(first_bad[None]), epoch)
        t.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        step_lr = t.lr * lr_factor(cfg, progress, steps_per_epoch)
        for group in t.optimizer.param_groups:
            group["lr"] = step_lr
        t.optimizer.step()
        progress["step"] += 1
        n_correct = (logits_adv.argmax(1) == y).sum()
        totals += torch.stack([loss.detach(), loss_cls.detach(), loss_fsr.detach(), n_correct]).float()
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            accelerator.print(f"epoch {epoch + 1} step {step + 1}/{len(batches)} loss {loss.item():.4f}", flush=True)
    # DDP syncs BN running statistics at the start of each forward, from rank 0: sync the last step's too, so
    # that every process evaluates and checkpoints the same network.
    for buffer in t.net.buffers():
        buffer.copy_(broadcast(buffer, from_process=0))
    images = sum(len(idx) for idx in batches)
    totals = accelerator.reduce(torch.cat([totals, totals.new_tensor([images])]), "sum")
    steps = max(len(batches) * accelerator.num_processes, 1)
    return {
        "lr": step_lr,
        "loss": totals[0].item() / steps,
        "loss_cls": totals[1].item() / steps,
        "loss_fsr": totals[2].item() / steps,
        "train_adv_acc": totals[3].item() / max(totals[4].item(), 1),
        "images": totals[4].item(),
    }


def clean_and_pgd_accuracy(
    accelerator: Accelerator,
    net,
    images,
    labels,
    cfg: TrainConfig,
    steps: int,
    step_size: float,
    random_start: bool,
    attack_net=None,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """Clean and PGD accuracy on all `images` (uint8), split over the processes in global batches of `batch_size`
    (default the training batch); the network in eval mode, the attack through `attack_net` (default `net`)."""
    net.eval()
    attack_net = net if attack_net is None else attack_net.eval()
    batch_size = batch_size or cfg.batch_size
    counts = torch.zeros(3, device=accelerator.device)
    batches = list(shard_batches(len(images), batch_size, accelerator, None))
    rest = len(images) % batch_size  # the tail that does not fill a global batch: the main process takes it
    if rest and accelerator.is_main_process:
        batches.append(torch.arange(len(images) - rest, len(images)))
    for idx in batches:
        x, y = to_float(images[idx]), labels[idx]
        x_adv = pgd(attack_net, x, y, cfg.eps, step_size, steps, random_start)
        n = torch.tensor(len(y)).to(y.device)
        clean = correct(net, x, y)  # an image is robust only where its clean version is right too (as AutoAttack)
        counts += torch.stack([clean.sum(), (correct(net, x_adv, y) & clean).sum(), n])
    clean, adv, n = accelerator.reduce(counts, "sum").tolist()
    return clean / n, adv / n
